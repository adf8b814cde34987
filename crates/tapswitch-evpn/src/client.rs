//! A typed client of gobgpd's API for the calls EVPN needs.
//!
//! Every call runs on the caller's tokio runtime; the agent keeps that runtime on a thread
//! of its own, so nothing here ever runs on the packet path.

use std::time::Duration;

use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use crate::api;
use crate::api::gobgp_api_client::GobgpApiClient;
use crate::route::{EvpnRoute, RouteError, evpn_family};

/// How long connecting to gobgpd may take before the attempt is an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call (a unary call, or the start of a stream) may take: a gobgpd that
/// stops answering must not hold the agent forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of talking to gobgpd.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{address:?} is not a gobgpd API address (expected HOST:PORT): {source}")]
    BadAddress {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "connecting to gobgpd at {address} failed (is gobgpd running with --api-hosts {address}?): {source}"
    )]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("gobgpd refused {call}: {status}")]
    Call {
        call: &'static str,
        status: tonic::Status,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// A connection to one gobgpd.
#[derive(Clone)]
pub struct GobgpClient {
    address: String,
    api: GobgpApiClient<Channel>,
}

fn call_error(call: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |status| ClientError::Call { call, status }
}

/// Runs one call with [`CALL_TIMEOUT`].
async fn timed<T>(
    call: &'static str,
    future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(reply) => Ok(reply.map_err(call_error(call))?.into_inner()),
        Err(_) => Err(ClientError::Call {
            call,
            status: tonic::Status::deadline_exceeded(format!("no answer within {CALL_TIMEOUT:?}")),
        }),
    }
}

impl GobgpClient {
    /// Connects to gobgpd's API at `HOST:PORT` (plain HTTP/2, as gobgpd serves by default).
    pub async fn connect(address: &str) -> Result<GobgpClient, ClientError> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|source| ClientError::BadAddress {
                address: address.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_owned(),
                source,
            })?;
        Ok(GobgpClient {
            address: address.to_owned(),
            api: GobgpApiClient::new(channel),
        })
    }

    /// The address this client talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// gobgpd's global settings (its ASN and router id): a cheap liveness check.
    pub async fn global(&mut self) -> Result<api::Global, ClientError> {
        let reply = timed("GetBgp", self.api.get_bgp(api::GetBgpRequest {})).await?;
        Ok(reply.global.unwrap_or_default())
    }

    /// Adds (or replaces: same NLRI, same source) a path to the global RIB.
    pub async fn add_path(&mut self, path: api::Path) -> Result<(), ClientError> {
        let request = api::AddPathRequest {
            table_type: api::TableType::Global as i32,
            vrf_id: String::new(),
            path: Some(path),
        };
        timed("AddPath", self.api.add_path(request)).await?;
        Ok(())
    }

    /// Adds many paths in one client stream (`AddPathStream`), `batch` paths per message:
    /// for bulk loads (the scale simulation), where one `AddPath` call per route would
    /// measure round trips rather than gobgpd.
    pub async fn add_paths(
        &mut self,
        paths: Vec<api::Path>,
        batch: usize,
    ) -> Result<(), ClientError> {
        let batch = batch.max(1);
        let mut messages = Vec::with_capacity(paths.len().div_ceil(batch));
        let mut paths = paths.into_iter().peekable();
        while paths.peek().is_some() {
            messages.push(api::AddPathStreamRequest {
                table_type: api::TableType::Global as i32,
                vrf_id: String::new(),
                paths: paths.by_ref().take(batch).collect(),
            });
        }
        // No CALL_TIMEOUT: a bulk load's length depends on its size, not on gobgpd's health.
        self.api
            .add_path_stream(tokio_stream::iter(messages))
            .await
            .map_err(call_error("AddPathStream"))?;
        Ok(())
    }

    /// Withdraws a path this client added (matched by its NLRI).
    pub async fn delete_path(&mut self, path: api::Path) -> Result<(), ClientError> {
        let request = api::DeletePathRequest {
            table_type: api::TableType::Global as i32,
            vrf_id: String::new(),
            family: Some(evpn_family()),
            path: Some(path),
            uuid: Vec::new(),
        };
        timed("DeletePath", self.api.delete_path(request)).await?;
        Ok(())
    }

    /// Every EVPN path in the global RIB: the best ones only, or all of them.
    pub async fn list_evpn(&mut self, best_only: bool) -> Result<Vec<api::Path>, ClientError> {
        // The v3 API has no best-only filter: every path of a destination comes with its `best` flag.
        let request = api::ListPathRequest {
            table_type: api::TableType::Global as i32,
            family: Some(evpn_family()),
            ..Default::default()
        };
        let mut stream = timed("ListPath", self.api.list_path(request)).await?;
        let mut paths = Vec::new();
        while let Some(reply) = stream.message().await.map_err(call_error("ListPath"))? {
            if let Some(destination) = reply.destination {
                paths.extend(
                    destination
                        .paths
                        .into_iter()
                        .filter(|path| path.best || !best_only),
                );
            }
        }
        Ok(paths)
    }

    /// Every EVPN route in the RIB that decodes, with the paths that do not (and why).
    pub async fn evpn_routes(
        &mut self,
    ) -> Result<(Vec<(api::Path, EvpnRoute)>, Vec<RouteError>), ClientError> {
        let mut routes = Vec::new();
        let mut refused = Vec::new();
        for path in self.list_evpn(true).await? {
            match EvpnRoute::from_path(&path) {
                Ok(route) => routes.push((path, route)),
                Err(error) => refused.push(error),
            }
        }
        Ok((routes, refused))
    }

    /// A stream of best-path changes in the global RIB (`current` replays what is there first).
    ///
    /// gobgpd answers the call only with its first event, so this future does not finish
    /// while the RIB is quiet: run it beside other work (the agent gives it a task), never
    /// before a call that would produce that first event. No timeout, for the same reason.
    pub async fn watch_best(
        &mut self,
        current: bool,
    ) -> Result<tonic::Streaming<api::WatchEventResponse>, ClientError> {
        let reply = self
            .api
            .watch_event(api::WatchEventRequest {
                table: Some(api::watch_event_request::Table {
                    filters: vec![api::watch_event_request::table::Filter {
                        r#type: api::watch_event_request::table::filter::Type::Best as i32,
                        init: current,
                    }],
                }),
                peer: None,
            })
            .await
            .map_err(call_error("WatchEvent"))?;
        Ok(reply.into_inner())
    }
}
