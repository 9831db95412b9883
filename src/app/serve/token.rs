//! The hook endpoint's token. `SEGBRIDGE_HOOK_TOKEN` when set; otherwise one generated on first
//! use and kept beside the state file (`<state>.hook-token`, mode 0600), so that `serve` and the
//! Lua script `orthanc-lua` writes share it with no setup, and a web page in the operator's
//! browser cannot call the endpoint (it cannot read the file).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ledger::StateAt;
use crate::monai::Secret;

/// The token, and whether the operator set it (an explicit token is required off loopback).
pub struct HookToken {
    pub secret: Secret,
    pub explicit: bool,
}

/// `SEGBRIDGE_HOOK_TOKEN`, when set and not blank.
pub fn from_env() -> Option<Secret> {
    std::env::var("SEGBRIDGE_HOOK_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(Secret::new)
}

/// Where the generated token of the state file `state` is kept.
pub fn token_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".hook-token");
    PathBuf::from(name)
}

/// The token in force for the state file `state`: the environment's, else the kept one
/// (generated now when there is none yet).
pub fn hook_token(state: &StateAt) -> Result<HookToken, String> {
    if let Some(secret) = from_env() {
        return Ok(HookToken {
            secret,
            explicit: true,
        });
    }
    let Some(state) = state.file() else {
        return Err(format!(
            "with --state {} every segbridge process must share one hook token: set \
             SEGBRIDGE_HOOK_TOKEN (the same in each, and in `segbridge orthanc-lua`)",
            state.shown()
        ));
    };
    let path = token_path(state);
    let secret = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Secret::new(t.trim()),
        Ok(_) => return Err(format!("{}: empty hook token file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(&path)?,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(HookToken {
        secret,
        explicit: false,
    })
}

fn generate(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    if let Err(e) = &f {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            // another process made it first: use theirs
            return std::fs::read_to_string(path)
                .map(|t| Secret::new(t.trim()))
                .map_err(|e| format!("cannot read {}: {e}", path.display()));
        }
    }
    let write = f.as_mut().map_err(|e| e.to_string()).and_then(|f| {
        f.write_all(token.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| e.to_string())
    });
    write.map_err(|e| format!("cannot create the hook token {}: {e}", path.display()))?;
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_ledger_needs_the_token_from_the_environment() {
        if from_env().is_some() {
            return;
        }
        let at = StateAt::parse("postgres://u:secret-pw@127.0.0.1:5/db").unwrap();
        let e = hook_token(&at).err().unwrap();
        assert!(e.contains("SEGBRIDGE_HOOK_TOKEN"), "{e}");
        assert!(!e.contains("secret-pw"), "{e}");
    }

    #[test]
    fn a_token_is_generated_once_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        if from_env().is_some() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("s.db");
        let a = hook_token(&StateAt::File(state.clone())).unwrap();
        let b = hook_token(&StateAt::File(state.clone())).unwrap();
        assert!(!a.explicit);
        assert_eq!(a.secret.expose().len(), 64);
        assert_eq!(a.secret.expose(), b.secret.expose());
        let mode = std::fs::metadata(token_path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
