//! CURVE keys in memory and on disk: [`PublicKey`], [`SecretKey`], [`KeyPair`] and the
//! `NAME.key` / `NAME.pub` files.
//!
//! A key file holds one key as Z85 text (surrounding whitespace ignored). No comment syntax:
//! `#` is a Z85 character.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{CurveError, KEY_BYTES, Z85_LEN};

extern "C" {
    // In every libzmq 4.2+ (linked through zmq-sys, which does not re-export it).
    fn zmq_curve_public(
        z85_public_key: *mut std::os::raw::c_char,
        z85_secret_key: *const std::os::raw::c_char,
    ) -> std::os::raw::c_int;
}

/// A Curve25519 public key; `Display` and `Debug` show it as Z85.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_BYTES]);

impl PublicKey {
    /// Parses 40 characters of Z85; `what` names the key in the error.
    pub fn from_z85(text: &str, what: &str) -> Result<Self, CurveError> {
        decode(text.trim(), what).map(PublicKey)
    }

    /// The key as Z85 text (what allow lists and `curve.server_key` hold, and the ZAP `User-Id`
    /// the broker gives a connection).
    pub fn to_z85(&self) -> String {
        encode(&self.0)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// A key from 32 raw bytes (a ZAP request carries them so).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        PublicKey(bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl FromStr for PublicKey {
    type Err = CurveError;

    fn from_str(text: &str) -> Result<Self, CurveError> {
        PublicKey::from_z85(text, "public key")
    }
}

/// A Curve25519 secret key. It cannot be printed (`Debug` is redacted, there is no `Display`)
/// and its bytes are overwritten when it is dropped.
pub struct SecretKey([u8; KEY_BYTES]);

impl SecretKey {
    /// Parses 40 characters of Z85; `what` names the key in the error (never the key itself).
    pub fn from_z85(text: &str, what: &str) -> Result<Self, CurveError> {
        decode(text.trim(), what).map(SecretKey)
    }

    /// The matching public key.
    pub fn public_key(&self) -> Result<PublicKey, CurveError> {
        let mut secret = [0u8; Z85_LEN + 1];
        let mut public = [0u8; Z85_LEN + 1];
        secret[..Z85_LEN].copy_from_slice(encode(&self.0).as_bytes());
        // SAFETY: both buffers hold 41 bytes, what zmq_curve_public reads (a NUL-terminated Z85
        // secret key) and writes (a NUL-terminated Z85 public key).
        let rc = unsafe { zmq_curve_public(public.as_mut_ptr().cast(), secret.as_ptr().cast()) };
        secret.fill(0);
        if rc != 0 {
            return Err(CurveError::Unsupported);
        }
        let text = std::str::from_utf8(&public[..Z85_LEN])
            .map_err(|_| CurveError::Unsupported)?
            .to_owned();
        PublicKey::from_z85(&text, "derived public key")
    }

    /// The raw bytes, for libzmq's `ZMQ_CURVE_SECRETKEY` only.
    pub(crate) fn expose(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: a valid, aligned `&mut u8`; volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A key pair: a secret key and its public key.
#[derive(Debug)]
pub struct KeyPair {
    /// The public key, for others to know.
    pub public: PublicKey,
    /// The secret key, for this process only.
    pub secret: SecretKey,
}

impl KeyPair {
    /// A new random key pair (libsodium's generator, through libzmq).
    pub fn generate() -> Result<Self, CurveError> {
        if !super::available() {
            return Err(CurveError::Unsupported);
        }
        let mut pair = zmq::CurveKeyPair::new()?;
        let keys = KeyPair {
            public: PublicKey(pair.public_key),
            secret: SecretKey(pair.secret_key),
        };
        pair.secret_key.fill(0);
        Ok(keys)
    }

    /// The pair of `secret`.
    pub fn from_secret(secret: SecretKey) -> Result<Self, CurveError> {
        Ok(KeyPair {
            public: secret.public_key()?,
            secret,
        })
    }

    /// Reads the secret key file `path` (`NAME.key`) and derives its public key.
    pub fn read(path: &Path) -> Result<Self, CurveError> {
        KeyPair::from_secret(read_secret_key(path)?)
    }
}

/// Generates a key pair and writes it as `<base>.key` (the secret, mode 0600) and `<base>.pub`.
/// Refuses to overwrite an existing key file. Returns the pair and the two paths.
pub fn write_key_pair(base: &Path) -> Result<(KeyPair, PathBuf, PathBuf), CurveError> {
    let keys = KeyPair::generate()?;
    let with_suffix = |suffix: &str| {
        let mut name = base.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let (secret_path, public_path) = (with_suffix(".key"), with_suffix(".pub"));
    write_new(&secret_path, &encode(keys.secret.expose()), 0o600)?;
    write_new(&public_path, &keys.public.to_z85(), 0o644)?;
    Ok((keys, secret_path, public_path))
}

/// Reads a secret key file. A file that others can read is used, but logged at `warn`: the key
/// should be mode 0600.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, CurveError> {
    let text = read(path)?;
    warn_if_readable_by_others(path);
    SecretKey::from_z85(&text, &path.display().to_string())
}

/// Reads a public key file (`NAME.pub`).
pub fn read_public_key(path: &Path) -> Result<PublicKey, CurveError> {
    PublicKey::from_z85(&read(path)?, &path.display().to_string())
}

fn read(path: &Path) -> Result<String, CurveError> {
    std::fs::read_to_string(path).map_err(|source| CurveError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_new(path: &Path, z85: &str, mode: u32) -> Result<(), CurveError> {
    let io = |source| CurveError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(format!("{z85}\n").as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "secret key file is readable by others; it should be mode 0600"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn encode(bytes: &[u8; KEY_BYTES]) -> String {
    // 32 bytes is a multiple of 4, the only way encoding can fail.
    zmq::z85_encode(bytes).unwrap_or_default()
}

fn decode(text: &str, what: &str) -> Result<[u8; KEY_BYTES], CurveError> {
    let invalid = || CurveError::InvalidKey {
        what: what.to_owned(),
    };
    if text.len() != Z85_LEN || !text.is_ascii() {
        return Err(invalid());
    }
    let mut z85 = [0u8; Z85_LEN + 1];
    z85[..Z85_LEN].copy_from_slice(text.as_bytes());
    let mut bytes = [0u8; KEY_BYTES];
    // SAFETY: `z85` is 40 characters and a NUL, decoding to exactly 32 bytes, `bytes`' size.
    // (`zmq::z85_decode` ignores libzmq's NULL for invalid characters, hence the direct call.)
    let decoded = unsafe { zmq_sys::zmq_z85_decode(bytes.as_mut_ptr(), z85.as_ptr().cast()) };
    z85.fill(0);
    if decoded.is_null() {
        return Err(invalid());
    }
    Ok(bytes)
}
