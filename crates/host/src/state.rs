//! Per-instance store data and the linker that binds every host interface to it.

use crate::bindings::spin::fermyon::spin::variables;
use crate::kv::Store;
use crate::outbound::{AllowedHosts, OutboundPolicy};
use crate::variables::{ComponentVariables, VariableLookupError};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything an instance of one component may reach, fixed at load time.
#[derive(Debug)]
pub struct ComponentRuntime {
    /// The component id (after composition: the parent's id).
    pub id: Arc<str>,
    /// The stores it lists in `key_value_stores`, by label.
    pub stores: BTreeMap<String, Store>,
    /// Its rendered component variables.
    pub variables: ComponentVariables,
    /// Its parsed `allowed_outbound_hosts`.
    pub allowed_hosts: Arc<AllowedHosts>,
    /// WASI environment and preopens.
    pub wasi: crate::wasi::WasiSetup,
    /// The app's metrics (key-value, outbound and guest-event counters).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The `T` of every `Store<T>`: one per request or cron tick.
pub struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) outbound: OutboundPolicy,
    pub(crate) component: Arc<ComponentRuntime>,
}

impl InstanceState {
    /// Fresh state for one instance of `component`.
    pub fn new(component: Arc<ComponentRuntime>, client: crate::outbound::OutboundClient) -> Self {
        Self {
            wasi: component.wasi.build_ctx(&component.id, &component.metrics),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: OutboundPolicy {
                component_id: component.id.clone(),
                allowed: component.allowed_hosts.clone(),
                client,
                metrics: component.metrics.clone(),
            },
            component,
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl variables::Host for InstanceState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(match self.component.variables.get(&name) {
            Ok(v) => Ok(v.to_string()),
            Err(VariableLookupError::InvalidName(m)) => Err(variables::Error::InvalidName(m)),
            Err(VariableLookupError::Undefined(m)) => Err(variables::Error::Undefined(m)),
        })
    }
}

/// Builds the linker: WASI 0.2, wasi:http 0.2, Spin key-value, variables, outbound Redis and
/// PostgreSQL (`spin:postgres/postgres@4.0.0`), wasi:keyvalue.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::bindings::spin::SpinImports::add_to_linker::<_, HasSelf<InstanceState>>(
        &mut linker,
        |state| state,
    )?;
    Ok(linker)
}
