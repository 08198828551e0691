//! `doppel new NAME`: a service crate that builds at once into a deployable component.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

/// Flags of `doppel new`.
#[derive(Args, Debug)]
pub struct New {
    /// The service name (also the crate and directory name).
    pub name: String,
    /// Where to create it (default: ./NAME).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Path of the doppel SDK crate (default: the SDK of this doppel's source tree).
    #[arg(long, env = "DOPPEL_SDK")]
    pub sdk: Option<PathBuf>,
}

/// The SDK in the source tree this binary was built from.
fn bundled_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

const LIB: &str = r#"//! SERVICE: a doppel service. Build with `cargo build --release`, deploy with
//! `doppel deploy target/wasm32-wasip2/release/CRATE.wasm --name SERVICE`.

use doppel_sdk::{Bucket, Error, Json, Request, Router, config};
use serde::Serialize;

#[derive(Serialize)]
struct Visits {
    page: String,
    count: u64,
}

/// GET /hello/{name}: a greeting (the word comes from `--config greeting=...`).
fn hello(req: Request) -> Result<String, Error> {
    let greeting = config::get_or("greeting", "Hello")?;
    Ok(format!("{greeting}, {}!\n", req.param("name")?))
}

/// POST /visits/{page}: count a visit, atomically.
fn visit(req: Request) -> Result<Json<Visits>, Error> {
    let page = req.param("page")?.to_string();
    let count = Bucket::open("visits")?.increment(&page, 1)?;
    Ok(Json(Visits { page, count }))
}

fn routes() -> Router {
    Router::new().get("/hello/{name}", hello).post("/visits/{page}", visit)
}

doppel_sdk::service!(routes);
"#;

impl New {
    pub fn run(self) -> anyhow::Result<()> {
        doppel_api::check_service_name(&self.name).map_err(anyhow::Error::msg)?;
        let dir = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        if dir.exists() {
            bail!(
                "{} already exists; choose another name or --path",
                dir.display()
            );
        }
        let sdk = self.sdk.clone().unwrap_or_else(bundled_sdk);
        let sdk = sdk.canonicalize().map_err(|_| {
            anyhow::anyhow!(
                "the doppel SDK is not at {}; pass --sdk PATH (the `sdk` folder of the doppel repository)",
                sdk.display()
            )
        })?;
        let crate_name = self.name.replace('-', "_");
        std::fs::create_dir_all(dir.join("src"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::create_dir_all(dir.join(".cargo"))?;
        let files = [
            (
                "Cargo.toml",
                format!(
                    "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
                     [dependencies]\ndoppel-sdk = {{ path = {:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
                     [profile.release]\nstrip = \"debuginfo\"\n\n# A service is its own workspace.\n[workspace]\n",
                    self.name,
                    sdk.display().to_string()
                ),
            ),
            (
                ".cargo/config.toml",
                "[build]\ntarget = \"wasm32-wasip2\"\n".to_string(),
            ),
            (
                "rust-toolchain.toml",
                "[toolchain]\nchannel = \"stable\"\ntargets = [\"wasm32-wasip2\"]\n".to_string(),
            ),
            (".gitignore", "target/\n".to_string()),
            (
                "src/lib.rs",
                LIB.replace("SERVICE", &self.name)
                    .replace("CRATE", &crate_name),
            ),
        ];
        for (path, text) in files {
            std::fs::write(dir.join(path), text).with_context(|| format!("cannot write {path}"))?;
        }
        println!("Created {} in {}", self.name, dir.display());
        println!("  cd {} && cargo build --release", dir.display());
        println!(
            "  doppel deploy target/wasm32-wasip2/release/{crate_name}.wasm --name {}",
            self.name
        );
        println!("  curl http://127.0.0.1:8080/{}/hello/world", self.name);
        Ok(())
    }
}
