//! Modules: checking that uploaded bytes are a component this host can run, and keeping each
//! one precompiled on disk so that a restart deserializes instead of compiling.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::linker;
use crate::runtime::Runtime;
use crate::state::RequestState;

/// Why uploaded bytes cannot become a service. Every message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Not wasm at all.
    #[error(
        "this file is not WebAssembly (it does not start with \\0asm); deploy the .wasm file your build produced"
    )]
    NotWasm,
    /// A core module.
    #[error(
        "this is a core WebAssembly module, not a component; build with `cargo build --target wasm32-wasip2`, \
         which emits a component, or wrap a wasip1 module with `wasm-tools component new --adapt`"
    )]
    CoreModule,
    /// Does not parse or compile.
    #[error("the component is invalid: {0}")]
    Invalid(String),
    /// Imports something the host does not provide.
    #[error(
        "the component imports interfaces this host does not provide: {missing}. This host provides: {provided}"
    )]
    MissingImports {
        /// The unsupported imports, comma separated.
        missing: String,
        /// What the host does provide.
        provided: String,
    },
    /// Cannot be linked for another reason (a type mismatch, say).
    #[error("the component cannot be linked: {0}")]
    Link(String),
    /// Lacks the HTTP handler export.
    #[error(
        "the component does not export wasi:http/incoming-handler@0.2.x, so it cannot answer requests; \
         build it as an HTTP handler (with the doppel SDK's #[doppel_sdk::service], or wasi::http::proxy::export!)"
    )]
    NoHandler,
}

/// `sha256:` and the hex digest of `bytes`: a module's identity.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A compiled, linked, checked component.
pub struct Checked {
    /// The compiled component.
    pub component: Component,
    /// Ready to instantiate per request.
    pub pre: ProxyPre<RequestState>,
    /// Names of its imports.
    pub imports: Vec<String>,
}

/// Compiles `bytes` and checks that they form an HTTP component this host can link.
/// CPU-heavy: call from a blocking thread.
pub fn check(runtime: &Runtime, bytes: &[u8]) -> Result<Checked, ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleError::NotWasm);
    }
    // Bytes 4..8: version 1 with layer 0 is a core module; layer 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(ModuleError::CoreModule);
    }
    let component = Component::new(&runtime.engine, bytes)
        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    link(runtime, component)
}

/// Links an already compiled component (from the cache, or just compiled).
pub fn link(runtime: &Runtime, component: Component) -> Result<Checked, ModuleError> {
    let imports: Vec<String> = component
        .component_type()
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<&str> = imports
        .iter()
        .map(String::as_str)
        .filter(|name| !linker::is_provided(name))
        .collect();
    if !missing.is_empty() {
        return Err(ModuleError::MissingImports {
            missing: missing.join(", "),
            provided: linker::provided_summary(),
        });
    }
    let instance_pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|e| ModuleError::Link(format!("{e:#}")))?;
    let pre = ProxyPre::new(instance_pre).map_err(|_| ModuleError::NoHandler)?;
    Ok(Checked {
        component,
        pre,
        imports,
    })
}

/// Precompiled components on disk, in a directory named after the engine's compatibility hash:
/// a new wasmtime or different engine settings read from a fresh directory and recompile.
pub struct ModuleCache {
    dir: PathBuf,
}

/// What a precompiled file starts with: the SHA-256 of the module's digest and the machine code.
fn checksum(digest: &str, code: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(digest.as_bytes());
    hasher.update([0]);
    hasher.update(code);
    hasher.finalize().into()
}

/// Feeds `Hash` output into sha256, so the directory name is stable across Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ModuleCache {
    /// The cache under `root` for `engine`.
    pub fn new(root: &Path, engine: &Engine) -> std::io::Result<ModuleCache> {
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let key = hex::encode(&hasher.0.finalize()[..8]);
        let dir = root.join(format!("engine-{key}"));
        std::fs::create_dir_all(&dir)?;
        Ok(ModuleCache { dir })
    }

    /// The file of `digest`'s precompiled copy; `None` for anything that is not a well-formed
    /// digest, which never names a file (`sha256:../../x` must not reach outside the cache).
    fn path(&self, digest: &str) -> Option<PathBuf> {
        doppel_api::check_module_digest(digest).ok()?;
        let hex = digest.trim_start_matches("sha256:");
        Some(self.dir.join(format!("{hex}.cwasm")))
    }

    /// The component for `digest`, if a sound precompiled copy is on disk. A damaged file is
    /// removed (and the caller recompiles).
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        // The file starts with a checksum of the digest and the rest: deserializing damaged
        // machine code would be undefined behaviour, so integrity is checked first, and a copy
        // made for another module (renamed, or swapped in) does not pass as this one.
        let sound = bytes.len() > 32 && checksum(digest, &bytes[32..])[..] == bytes[..32];
        if sound {
            // SAFETY: the bytes were written by `store` below from `Component::serialize` of this
            // same engine configuration (the directory is keyed by it), and their checksum matches.
            match unsafe { Component::deserialize(engine, &bytes[32..]) } {
                Ok(component) => return Some(component),
                Err(e) => {
                    tracing::warn!(module = digest, error = %e, "precompiled module unusable; recompiling")
                }
            }
        } else {
            tracing::warn!(module = digest, path = %path.display(), "precompiled module is damaged; recompiling");
        }
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Writes the precompiled form of `component` (atomically: temp file, fsync, rename).
    pub fn store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let code = component.serialize().map_err(anyhow::Error::from)?;
        let path = self
            .path(digest)
            .ok_or_else(|| anyhow::anyhow!("{digest:?} is not a module digest"))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&checksum(digest, &code))?;
        f.write_all(&code)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Forgets the precompiled copy of a module no service uses any more.
    pub fn remove(&self, digest: &str) {
        if let Some(path) = self.path(digest) {
            let _ = std::fs::remove_file(path);
        }
    }
}
