//! Outbound HTTP policy of the test host: an allow list of authorities, as Spin's
//! `allowed_outbound_hosts`, in front of wasmtime's default client.

use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Which authorities the component may reach. Clones share the list.
#[derive(Clone)]
pub struct OutboundPolicy {
    allowed: Option<Arc<Vec<String>>>,
}

impl OutboundPolicy {
    /// Allows every destination.
    pub fn allow_all() -> Self {
        Self { allowed: None }
    }

    /// Allows only these `host:port` authorities; others get `HttpRequestDenied`.
    pub fn allow_only(authorities: &[&str]) -> Self {
        let allowed = authorities
            .iter()
            .map(|authority| authority.to_string())
            .collect();
        Self {
            allowed: Some(Arc::new(allowed)),
        }
    }

    fn allows(&self, authority: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|entry| entry == authority))
    }
}

type Response = http::Response<WasiBody>;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(Response, IoFuture), Error>> + Send> {
        let _ = fut;
        let authority = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .unwrap_or_default();
        if !self.allows(&authority) {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as IoFuture,
            ))
        })
    }
}
