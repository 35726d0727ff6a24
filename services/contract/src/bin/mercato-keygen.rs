//! Writes a fresh Ed25519 JWT key pair (`private.pem`, `jwks.json`) into a folder, with
//! the same generator the operator uses for a Store's Secrets.
//!
//! Usage: mercato-keygen <dir>   (existing keys are left alone; the private key is
//! written 0600 from creation)

use std::path::PathBuf;
use std::process::ExitCode;

use mercato_contract::credentials::{generate_jwt_keys, write_private};
use mercato_contract::secret_keys;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: mercato-keygen <dir>");
        return ExitCode::from(2);
    };
    let private = dir.join(secret_keys::JWT_PRIVATE_KEY);
    let jwks = dir.join(secret_keys::JWKS);
    if private.exists() && jwks.exists() {
        println!("keys already in {}", dir.display());
        return ExitCode::SUCCESS;
    }
    let keys = generate_jwt_keys();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| write_private(&private, keys.private_pem.as_bytes()))
        .and_then(|()| std::fs::write(&jwks, &keys.jwks_json));
    match written {
        Ok(()) => {
            println!(
                "wrote {} and {} (kid {})",
                private.display(),
                jwks.display(),
                keys.kid
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write keys to {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
