//! Master key resolution and data-key wrapping.
//!
//! Invariant: the master key comes from, in order, a systemd credential
//! (`$CREDENTIALS_DIRECTORY/facegate.key`), the data directory's key file (mode 0600 or
//! stricter, looser is refused), or `FACEGATE_MASTER_KEY`; a first start with none of them
//! creates the key file. The data key only ever reaches disk wrapped (sealed) by the master key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::crypto::{CryptoError, KEY_LEN, SecretKey};

pub const CREDENTIAL_NAME: &str = "facegate.key";
pub const KEY_FILE: &str = "master.key";
pub const MASTER_KEY_ENV: &str = "FACEGATE_MASTER_KEY";
/// Associated data of the wrapped data key: it cannot be swapped for any other sealed blob.
const WRAP_AAD: &[u8] = b"facegate/data-key/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    Credential(PathBuf),
    KeyFile(PathBuf),
    Environment,
    Created(PathBuf),
}

impl std::fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            MasterKeySource::KeyFile(p) => write!(f, "key file {}", p.display()),
            MasterKeySource::Environment => write!(f, "environment variable {MASTER_KEY_ENV}"),
            MasterKeySource::Created(p) => write!(f, "new key file {}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the master key from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing the master key file {path}: its mode is {mode:04o}, it must not be readable by group or others (chmod 600)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the master key from {source_name} must be 32 bytes written as 64 hex digits")]
    Malformed { source_name: String },
    #[error("cannot create the master key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the master key ({source_name}) does not open this data directory's data key: wrong key? Nothing was changed"
    )]
    WrongMasterKey { source_name: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Where to look, so tests need not touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    pub credentials_directory: Option<PathBuf>,
    pub master_key_env: Option<String>,
}

impl KeySources {
    pub fn from_env() -> KeySources {
        KeySources {
            credentials_directory: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            master_key_env: std::env::var(MASTER_KEY_ENV).ok().filter(|v| !v.is_empty()),
        }
    }
}

/// Finds the master key, creating the key file in `data_dir` on a first start.
pub fn resolve_master_key(
    data_dir: &Path,
    sources: &KeySources,
) -> Result<(SecretKey, MasterKeySource), KeyError> {
    if let Some(dir) = &sources.credentials_directory {
        let path = dir.join(CREDENTIAL_NAME);
        if path.exists() {
            let key = read_key_file(&path, false)?;
            return Ok((key, MasterKeySource::Credential(path)));
        }
    }
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        let key = read_key_file(&path, true)?;
        return Ok((key, MasterKeySource::KeyFile(path)));
    }
    if let Some(value) = &sources.master_key_env {
        let key = parse_key(value.as_bytes()).ok_or_else(|| KeyError::Malformed {
            source_name: MASTER_KEY_ENV.into(),
        })?;
        return Ok((key, MasterKeySource::Environment));
    }
    let key = SecretKey::generate()?;
    create_key_file(&path, &key)?;
    Ok((key, MasterKeySource::Created(path)))
}

fn read_key_file(path: &Path, check_mode: bool) -> Result<SecretKey, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    if check_mode {
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(read)?);
    parse_key(&bytes).ok_or_else(|| KeyError::Malformed {
        source_name: path.display().to_string(),
    })
}

/// 64 hex digits (surrounding whitespace ignored).
fn parse_key(raw: &[u8]) -> Option<SecretKey> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(text, key.as_mut()).ok()?;
    Some(SecretKey::from_bytes(*key))
}

fn create_key_file(path: &Path, key: &SecretKey) -> Result<(), KeyError> {
    let create = |source| KeyError::Create {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(create)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_bytes())));
    file.write_all(text.as_bytes()).map_err(create)?;
    file.sync_all().map_err(create)?;
    // The new directory entry must survive a power cut too.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(create)?;
    Ok(())
}

/// Associated data of the wrapped lookup (HMAC) key.
pub const LOOKUP_WRAP_AAD: &[u8] = b"facegate/lookup-key/v1";

/// Seals the data key under the master key.
pub fn wrap_data_key(master: &SecretKey, data_key: &SecretKey) -> Result<Vec<u8>, KeyError> {
    wrap_key(master, WRAP_AAD, data_key)
}

/// Opens a wrapped data key; a wrong master key is a clear error, never a new empty store.
pub fn unwrap_data_key(
    master: &SecretKey,
    source: &MasterKeySource,
    wrapped: &[u8],
) -> Result<SecretKey, KeyError> {
    unwrap_key(master, source, WRAP_AAD, wrapped)
}

/// Seals a store key under the master key, `purpose` bound as associated data.
pub fn wrap_key(master: &SecretKey, purpose: &[u8], key: &SecretKey) -> Result<Vec<u8>, KeyError> {
    Ok(master.seal(purpose, key.as_bytes())?)
}

pub fn unwrap_key(
    master: &SecretKey,
    source: &MasterKeySource,
    purpose: &[u8],
    wrapped: &[u8],
) -> Result<SecretKey, KeyError> {
    let plain = master.open(purpose, wrapped).map_err(|e| match e {
        CryptoError::Authentication => KeyError::WrongMasterKey {
            source_name: source.to_string(),
        },
        e => KeyError::Crypto(e),
    })?;
    let bytes: [u8; KEY_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Format)?;
    Ok(SecretKey::from_bytes(bytes))
}

/// The key file a rotation writes before the records are re-wrapped; renamed over the key
/// file once they are, so a crash in between leaves one of the two able to open the store.
pub fn pending_key_file(key_file: &Path) -> PathBuf {
    key_file.with_extension("key.new")
}

/// Reads a master key file (0600 or stricter), e.g. the new key a rotation is given.
pub fn read_master_key_file(path: &Path) -> Result<SecretKey, KeyError> {
    read_key_file(path, true)
}

/// Writes a new 0600 key file (replacing a stale one at the same path).
pub fn write_new_key_file(path: &Path, key: &SecretKey) -> Result<(), KeyError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(KeyError::Create {
                path: path.to_owned(),
                source,
            });
        }
    }
    create_key_file(path, key)
}

/// Moves the pending key file over the key file, durably.
pub fn commit_key_file(pending: &Path, key_file: &Path) -> Result<(), KeyError> {
    let create = |source| KeyError::Create {
        path: key_file.to_owned(),
        source,
    };
    std::fs::rename(pending, key_file).map_err(create)?;
    let dir = key_file.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(create)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fg-keys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn first_start_creates_a_0600_key_file_and_later_starts_read_it() {
        let dir = tempdir("create");
        let (k1, src) = resolve_master_key(&dir, &KeySources::default()).unwrap();
        let path = dir.join(KEY_FILE);
        assert_eq!(src, MasterKeySource::Created(path.clone()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, src) = resolve_master_key(&dir, &KeySources::default()).unwrap();
        assert_eq!(src, MasterKeySource::KeyFile(path));
        assert_eq!(k1.as_bytes(), k2.as_bytes());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_group_readable_key_file_is_refused() {
        let dir = tempdir("perm");
        let path = dir.join(KEY_FILE);
        std::fs::write(&path, "00".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = resolve_master_key(&dir, &KeySources::default()).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn credential_wins_then_file_then_environment() {
        let dir = tempdir("order");
        let creds = dir.join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(
            creds.join(CREDENTIAL_NAME),
            format!("{}\n", "11".repeat(32)),
        )
        .unwrap();
        let env_key = "22".repeat(32);
        let sources = KeySources {
            credentials_directory: Some(creds.clone()),
            master_key_env: Some(env_key.clone()),
        };
        let (k, src) = resolve_master_key(&dir, &sources).unwrap();
        assert!(matches!(src, MasterKeySource::Credential(_)));
        assert_eq!(k.as_bytes(), &[0x11; 32]);

        let sources = KeySources {
            credentials_directory: None,
            master_key_env: Some(env_key),
        };
        let (k, src) = resolve_master_key(&dir, &sources).unwrap();
        assert_eq!(src, MasterKeySource::Environment);
        assert_eq!(k.as_bytes(), &[0x22; 32]);
        assert!(
            !dir.join(KEY_FILE).exists(),
            "an environment key creates no file"
        );

        let bad = KeySources {
            credentials_directory: None,
            master_key_env: Some("short".into()),
        };
        assert!(matches!(
            resolve_master_key(&dir, &bad),
            Err(KeyError::Malformed { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_wrong_master_key_is_a_clear_error() {
        let master = SecretKey::generate().unwrap();
        let data = SecretKey::generate().unwrap();
        let wrapped = wrap_data_key(&master, &data).unwrap();
        let src = MasterKeySource::Environment;
        assert_eq!(
            unwrap_data_key(&master, &src, &wrapped).unwrap().as_bytes(),
            data.as_bytes()
        );
        let wrong = SecretKey::generate().unwrap();
        let err = unwrap_data_key(&wrong, &src, &wrapped).unwrap_err();
        assert!(err.to_string().contains("wrong key"), "{err}");
        // A template sealed under the data key cannot be passed off as the wrapped key.
        let template = data.seal(b"enrollment/1", &[0u8; 32]).unwrap();
        assert!(unwrap_data_key(&master, &src, &template).is_err());
    }
}
