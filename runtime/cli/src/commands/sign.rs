//! `doppel sign`: signs a component with a key from `doppel keygen`, optionally recording its
//! release version, so that a cluster that trusts the key accepts it (`doppel trust`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use doppel_api::signing::{RELEASE_SECTION, Release};
use wasmsign2::{CustomSection, Module, SecretKey, Section};

/// Flags of `doppel sign`.
#[derive(Args, Debug)]
pub struct Sign {
    /// The component to sign.
    pub file: PathBuf,
    /// The secret key (`doppel keygen` wrote it).
    #[arg(long)]
    pub key: PathBuf,
    /// Record this release version in the component, under the signature (e.g. 1.4.2): hosts
    /// then refuse to replace a running release with an older one unless told to.
    #[arg(long, value_parser = parse_release)]
    pub release: Option<String>,
    /// Where the signed component goes (default: next to FILE, as NAME.signed.wasm).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

fn parse_release(text: &str) -> Result<String, String> {
    Release::parse(text).map(|r| r.to_string())
}

impl Sign {
    pub fn run(self) -> anyhow::Result<()> {
        let pem = std::fs::read_to_string(&self.key)
            .with_context(|| format!("cannot read the key {}", self.key.display()))?;
        // Never echo the file: it is a secret key (or someone's mistake about which file it is).
        let key = SecretKey::from_pem(&pem).map_err(|_| {
            anyhow::anyhow!(
                "{} is not an Ed25519 secret key in PEM; make one with `doppel keygen`",
                self.key.display()
            )
        })?;
        let bytes = std::fs::read(&self.file)
            .with_context(|| format!("cannot read {}", self.file.display()))?;
        let mut module = Module::deserialize(&mut &bytes[..]).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a WebAssembly component or module ({e})",
                self.file.display()
            )
        })?;
        // A new release replaces a recorded one; with none given, the recorded one stays.
        if let Some(release) = &self.release {
            module
                .sections
                .retain(|s| !matches!(s, Section::Custom(c) if c.name() == RELEASE_SECTION));
            module.sections.push(Section::Custom(CustomSection::new(
                RELEASE_SECTION.to_string(),
                release.as_bytes().to_vec(),
            )));
        }
        let signed = key
            .sign(module, None)
            .map_err(|e| anyhow::anyhow!("cannot sign {}: {e}", self.file.display()))?;
        let output = self.output.unwrap_or_else(|| {
            let stem = self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "component".into());
            self.file.with_file_name(format!("{stem}.signed.wasm"))
        });
        let mut out = Vec::with_capacity(bytes.len() + 256);
        signed.serialize(&mut out)?;
        std::fs::write(&output, &out)
            .with_context(|| format!("cannot write {}", output.display()))?;
        println!(
            "signed {} -> {}{}",
            self.file.display(),
            output.display(),
            self.release
                .map(|r| format!(" (release {r})"))
                .unwrap_or_default()
        );
        Ok(())
    }
}
