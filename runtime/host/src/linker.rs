//! The guest contract: which interfaces a component may import (the table is in ARCHITECTURE.md).

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::state::RequestState;

/// Interfaces the host links, as `package/interface` with the versions accepted. wasmtime's linker
/// resolves released `0.2.x` versions semver-compatibly; drafts match exactly. Used to name every
/// unsupported import of a component at once; the linker itself stays the final word.
pub(crate) const PROVIDED: &[(&str, Versions)] = &[
    ("wasi:cli/", Versions::Released),
    ("wasi:io/", Versions::Released),
    ("wasi:clocks/", Versions::Released),
    ("wasi:random/", Versions::Released),
    ("wasi:filesystem/", Versions::Released),
    ("wasi:sockets/", Versions::Released),
    ("wasi:http/types", Versions::Released),
    ("wasi:http/outgoing-handler", Versions::Released),
    ("wasi:keyvalue/store", Versions::Drafts),
    ("wasi:keyvalue/atomics", Versions::Drafts),
    ("wasi:keyvalue/batch", Versions::Drafts),
    ("wasi:config/store", Versions::Exactly("0.2.0-rc.1")),
    ("wasi:logging/logging", Versions::Exactly("0.1.0-draft")),
    ("wasi:blobstore/", Versions::Exactly("0.2.0-draft")),
];

/// Which versions of an interface the host accepts.
#[derive(Clone, Copy)]
pub(crate) enum Versions {
    /// Any released `0.2.x` (wasmtime-wasi's newest 0.2 satisfies them all).
    Released,
    /// Both keyvalue drafts.
    Drafts,
    /// Only this pre-release.
    Exactly(&'static str),
}

/// Whether an import named like `wasi:cli/stdout@0.2.3` is provided.
pub(crate) fn is_provided(import: &str) -> bool {
    let (name, version) = import.split_once('@').unwrap_or((import, ""));
    PROVIDED.iter().any(|(prefix, versions)| {
        let matches_name = if prefix.ends_with('/') {
            name.starts_with(prefix)
        } else {
            name == *prefix
        };
        matches_name
            && match versions {
                Versions::Released => version.starts_with("0.2.") && !version.contains('-'),
                Versions::Drafts => version == "0.2.0-draft" || version == "0.2.0-draft2",
                Versions::Exactly(v) => version == *v,
            }
    })
}

/// The human list of what is provided, for error messages.
pub(crate) fn provided_summary() -> String {
    "wasi:http 0.2.x (incoming-handler export; outgoing requests only to --allow-outbound servers), wasi:cli, wasi:io, \
     wasi:clocks, wasi:random 0.2.x (filesystem and sockets linked but with no access), \
     wasi:keyvalue 0.2.0-draft and 0.2.0-draft2, wasi:config 0.2.0-rc.1, wasi:logging 0.1.0-draft, wasi:blobstore 0.2.0-draft"
        .to_string()
}

pub(crate) fn build(engine: &Engine) -> anyhow::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    // All of wasmtime-wasi, not only the proxy subset: Rust std guests import wasi:cli
    // environment, exit and terminal interfaces and wasi:filesystem even when they never use them.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("while linking wasi")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("while linking wasi:http")?;
    crate::keyvalue::add_to_linker(&mut linker)
        .map_err(anyhow::Error::from)
        .context("while linking wasi:keyvalue")?;
    wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut RequestState| {
        wasmtime_wasi_config::WasiConfig::from(&*s.config)
    })
    .map_err(anyhow::Error::from)
    .context("while linking wasi:config")?;
    crate::blobstore::add_to_linker(&mut linker)
        .map_err(anyhow::Error::from)
        .context("while linking wasi:blobstore")?;
    crate::logging::add_to_linker(&mut linker)
        .map_err(anyhow::Error::from)
        .context("while linking wasi:logging")?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::is_provided;

    #[test]
    fn names_and_versions() {
        assert!(is_provided("wasi:cli/environment@0.2.0"));
        assert!(is_provided("wasi:http/types@0.2.4"));
        assert!(is_provided("wasi:keyvalue/store@0.2.0-draft"));
        assert!(is_provided("wasi:keyvalue/atomics@0.2.0-draft2"));
        assert!(is_provided("wasi:config/store@0.2.0-rc.1"));
        assert!(is_provided("wasi:logging/logging@0.1.0-draft"));
        assert!(!is_provided("wasi:logging/logging@0.1.0"));
        assert!(!is_provided("wasi:http/types@0.3.0-rc-2025-08-15"));
        assert!(!is_provided("wasi:keyvalue/store@0.2.0-draft3"));
        assert!(is_provided("wasi:blobstore/container@0.2.0-draft"));
        assert!(!is_provided("wasi:blobstore/container@0.2.0"));
        assert!(!is_provided("fermyon:spin/key-value@2.0.0"));
        assert!(!is_provided("wasi:http/incoming-handler@0.2.0"));
    }
}
