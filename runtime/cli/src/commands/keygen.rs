//! `doppel keygen`: a key pair for signing components (Ed25519, the WebAssembly
//! tool-conventions signature format that `doppel sign` writes and hosts verify).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// Flags of `doppel keygen`.
#[derive(Args, Debug)]
pub struct Keygen {
    /// Where the secret key goes (owner-only, never overwritten); the public key goes next to
    /// it, with `.pub` appended. Hand the `.pub` file to `doppel trust add`.
    pub path: PathBuf,
}

impl Keygen {
    pub fn run(self) -> anyhow::Result<()> {
        let public = {
            let mut p = self.path.clone().into_os_string();
            p.push(".pub");
            PathBuf::from(p)
        };
        for path in [&self.path, &public] {
            if path.exists() {
                anyhow::bail!(
                    "{} exists; a signing key is never overwritten (components it signed would stop verifying)",
                    path.display()
                );
            }
        }
        let pair = wasmsign2::KeyPair::generate();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            .with_context(|| format!("cannot create {}", self.path.display()))?;
        file.write_all(pair.sk.to_pem().as_bytes())?;
        file.sync_all()?;
        std::fs::write(&public, pair.pk.to_pem())
            .with_context(|| format!("cannot write {}", public.display()))?;
        println!(
            "secret key: {} (keep it off the hosts)",
            self.path.display()
        );
        println!(
            "public key: {} ({})",
            public.display(),
            doppel_api::signing::fingerprint(&pair.pk.to_bytes())
        );
        Ok(())
    }
}
