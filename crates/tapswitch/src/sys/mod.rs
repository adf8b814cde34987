//! Every system call the daemon makes outside netlink: the TUN ioctls
//! ([`tap`]), `AF_PACKET` sockets on existing netdevs ([`packet`]), entering and naming network namespaces ([`netns`]), and the
//! capability and uid changes of the privilege drop ([`privileges`]), the state
//! directory's `flock` ([`lock`]). Each file
//! wraps its `unsafe` in small helpers that return that module's error.

pub mod lock;
pub mod netns;
pub mod packet;
pub mod privileges;
pub mod sched;
pub mod tap;
pub mod udp;
