//! Entry points for the fuzz targets in `fuzz/`, which the crate's tests also run over each
//! target's regression corpus. Each takes bytes as an outsider could send them and must end in an
//! answer or an error: never a panic or a hang. Not a stable API.

use std::sync::{Arc, OnceLock};

use axum::extract::Query;
use axum::http::Uri;
use doppel_api::{
    BackupTarget, DeployRequest, DrainRequest, FollowRequest, InviteRequest, MigrateRequest,
    TokenRequest,
};
use serde::de::DeserializeOwned;

use crate::runtime::Runtime;

/// An upload to `POST /v1/modules`: the size check, then the checks, compilation and linking a
/// deploy runs before anything is stored (on an engine that does not optimise what it compiles).
pub fn component_upload(data: &[u8]) {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    if data.len() > MAX_UPLOAD {
        return;
    }
    let runtime = RUNTIME.get_or_init(|| Runtime::unoptimised().expect("the fuzzing engine"));
    let _ = crate::modules::check(runtime, data);
}

/// The largest upload the fuzzer sends through: a host takes up to 64 MiB by default, but
/// compiling that much per input would leave no time to fuzz.
const MAX_UPLOAD: usize = 1 << 20;

/// What an operator's client can send the admin API: `data` as every JSON body it accepts (with
/// the checks run on a decoded deploy, backup target and twin request before they touch the
/// store), as every query string, and as a service name in a path.
pub fn admin_bodies(data: &[u8]) {
    if let Ok(deploy) = serde_json::from_slice::<DeployRequest>(data) {
        let _ = crate::services::check_request("fuzzed", &deploy);
    }
    if let Ok(target) = serde_json::from_slice::<BackupTarget>(data) {
        let _ = doppel_backup::targets::check(&target);
    }
    if let Ok(follow) = serde_json::from_slice::<FollowRequest>(data) {
        let _ = doppel_backup::location::check_url(&follow.url);
        let _ = doppel_backup::keys::Identity::parse(&follow.identity, "the request");
    }
    if let Ok(invite) = serde_json::from_slice::<InviteRequest>(data) {
        for (key, value) in &invite.labels {
            let _ = doppel_replication::check_label_part("label key", key);
            let _ = doppel_replication::check_label_part("label value", value);
        }
    }
    decodes::<MigrateRequest>(data);
    decodes::<DrainRequest>(data);
    decodes::<TokenRequest>(data);
    decodes::<u64>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = doppel_api::check_service_name(text);
        if let Ok(uri) = format!("/?{text}").parse::<Uri>() {
            queries(&uri);
        }
    }
}

fn decodes<T: DeserializeOwned>(data: &[u8]) {
    let _ = serde_json::from_slice::<T>(data);
}

fn queries(uri: &Uri) {
    let _ = Query::<crate::admin::RemoveQuery>::try_from_uri(uri);
    let _ = Query::<crate::admin::LogQuery>::try_from_uri(uri);
    let _ = Query::<crate::admin::KeyQuery>::try_from_uri(uri);
    let _ = Query::<crate::admin::operator::EventsQuery>::try_from_uri(uri);
    let _ = Query::<crate::admin::audit::ListQuery>::try_from_uri(uri);
}

/// A guest's calls into `wasi:keyvalue`, with any arguments (handles included), decoded from
/// `data`; see [`crate::keyvalue::fuzzing`].
pub fn keyvalue_calls(data: &[u8]) {
    crate::keyvalue::fuzzing::calls(data);
}
