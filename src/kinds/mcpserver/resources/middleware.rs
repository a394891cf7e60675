//! The proxy's request chain, derived from the RunConfig.

use super::*;

/// The largest request body the proxy accepts (the runner's bodylimit step).
const MAX_REQUEST_BODY_BYTES: u64 = 8 << 20;

/// The chain the runner puts every request through, in the reference's order: a body
/// limit, the audit log when asked for, authentication (anonymous without an
/// MCPOIDCConfig), token exchange, tool filtering, MCP parsing, telemetry, webhooks,
/// authorization, panic recovery. Derived from the RunConfig's own fields, as the
/// runner derives it, so the chain always does what the RunConfig says. Not the
/// runner's usage-metrics step, which reports usage to the runner's vendor: a
/// platform's tenants' proxies do not phone home unless the platform says so (the
/// reference adds it unless TOOLHIVE_USAGE_METRICS_ENABLED=false or it runs in CI).
pub fn middleware_configs(rc: &RunConfig) -> Vec<Middleware> {
    let step = |kind, parameters| Middleware { kind, parameters };
    let mut chain = vec![step("bodylimit", json!({"max_bytes": MAX_REQUEST_BODY_BYTES}))];
    if let Some(audit) = &rc.audit_config {
        chain.push(step("audit", json!({"config_data": audit, "transport_type": rc.transport})));
    }
    // Without an MCPOIDCConfig the proxy authenticates no one (every request is let
    // through as a local user): the reference's default.
    chain.push(step("auth", rc.oidc_config.as_ref().map(|o| json!({"oidc_config": o})).unwrap_or_else(|| json!({}))));
    // Right after authentication, with the embedded authorization server: the caller's
    // token (one it issued) swapped for the upstream provider's, or, when that is not
    // wanted, the caller's credentials dropped before the MCP server.
    if let Some(server) = &rc.embedded_auth_server_config {
        if server.disable_upstream_token_injection {
            chain.push(step("strip-auth", json!({})));
        } else {
            chain.push(step(
                "upstreamswap",
                json!({"config": {"provider_name": crate::kinds::externalauth::authserver::provider_name(server)}}),
            ));
        }
    }
    // Then the token exchange: the caller's token is what gets exchanged.
    if let Some(exchange) = &rc.token_exchange_config {
        chain.push(step("tokenexchange", json!({"token_exchange_config": exchange})));
    }
    // Tool filtering: what tools/list shows, and what tools/call may reach.
    if !rc.tools_filter.is_empty() || !rc.tools_override.is_empty() {
        // Both keys of every override, empty ones too (the RunConfig's own field omits them).
        let overrides: BTreeMap<&str, Value> =
            rc.tools_override.iter().map(|(k, o)| (k.as_str(), json!({"name": o.name, "description": o.description}))).collect();
        let parameters = json!({"filter_tools": rc.tools_filter, "tools_override": overrides});
        chain.extend([step("tool-filter", parameters.clone()), step("tool-call-filter", parameters)]);
    }
    chain.push(step("mcp-parser", json!({})));
    // After parsing: spans and metrics carry the MCP method and tool.
    if let Some(telemetry) = &rc.telemetry_config {
        chain.push(step("telemetry", json!({"config": telemetry, "server_name": rc.name, "transport": rc.transport})));
    }
    // After parsing (the tool's name) and telemetry (its span notes the refusal).
    if let Some(limits) = &rc.rate_limit_config {
        let redis = rc.scaling_config.as_ref().and_then(|s| s.session_redis.as_ref());
        let mut parameters = json!({"namespace": rc.rate_limit_namespace, "server_name": rc.name, "config": limits});
        if let Some(redis) = redis {
            parameters["redis_addr"] = json!(redis.address);
            if redis.db != 0 {
                parameters["redis_db"] = json!(redis.db);
            }
        }
        chain.push(step("ratelimit", parameters));
    }
    // Webhooks: the mutating ones change the request, then the validating ones judge
    // what will be sent.
    for (kind, webhooks) in [("mutating-webhook", &rc.mutating_webhooks), ("validating-webhook", &rc.validating_webhooks)] {
        if !webhooks.is_empty() {
            chain.push(step(kind, json!({"webhooks": webhooks, "server_name": rc.name, "transport": rc.transport})));
        }
    }
    // Last before recovery: decisions see the authenticated caller and the parsed call.
    if let Some(authz) = &rc.authz_config {
        chain.push(step("authorization", json!({"config_data": authz})));
    } else if !rc.authz_config_path.is_empty() {
        chain.push(step("authorization", json!({"config_path": rc.authz_config_path})));
    }
    // A remote proxy's headers as known here (the plaintext ones); the runner adds
    // them with the Secret-backed ones, once it has read those, as its last step.
    if let Some(forward) = &rc.header_forward {
        chain.push(step("header-forward", json!({"add_headers": forward.add_plaintext_headers})));
    }
    chain.push(step("recovery", Value::Null));
    chain
}
