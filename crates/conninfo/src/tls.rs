//! TLS to members, as libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` describe it.
//! - The server's certificate is checked against the root certificates whenever there are
//!   some (`sslrootcert`, else `~/.postgresql/root.crt` when it exists), as libpq does;
//!   `verify-ca` and `verify-full` require them, and `verify-full` also checks that the
//!   certificate names the host (its IP address, since members are named by address).
//!   `sslrootcert=system` takes OpenSSL's default roots, with `verify-full` only.
//! - The client certificate is `sslcert` (else `~/.postgresql/postgresql.crt` when it
//!   exists) with its key `sslkey` (else `~/.postgresql/postgresql.key`); a key others may
//!   read is refused, as libpq refuses it.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;

use crate::Error;

/// libpq's `sslmode`, but `allow`, which tries a connection without TLS first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// libpq's default: TLS if the server offers it.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = Error;

    fn from_str(value: &str) -> Result<SslMode, Error> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(Error::Value {
                    key: "sslmode",
                    value: value.to_owned(),
                    expected: "disable, prefer, require, verify-ca or verify-full",
                })
            }
        })
    }
}

impl SslMode {
    pub fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as T;
        match self {
            SslMode::Disable => T::Disable,
            SslMode::Prefer => T::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => T::Require,
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The TLS keys of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ssl {
    pub mode: SslMode,
    /// A file, or `system`.
    pub rootcert: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Ssl {
    /// The connector for these settings; `home` is where the default files are looked for
    /// (`.postgresql/` in it). Reads the files now: an unusable one is an error here.
    pub fn connector(&self, home: Option<&Path>) -> Result<MakeTlsConnector, Error> {
        let tls_error =
            |what: &str, e: openssl::error::ErrorStack| Error::File(format!("{what}: {e}"));
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| tls_error("could not start TLS", e))?;
        builder.set_verify(SslVerifyMode::NONE);
        if self.mode != SslMode::Disable {
            let default = |name: &str| home.map(|h| h.join(".postgresql").join(name));
            match self.roots(default("root.crt"))? {
                Roots::System => {
                    builder.set_default_verify_paths().map_err(|e| {
                        tls_error("could not load the system's root certificates", e)
                    })?;
                    builder.set_verify(SslVerifyMode::PEER);
                }
                Roots::File(file) => {
                    builder.set_ca_file(&file).map_err(|e| {
                        tls_error(
                            &format!(
                                "could not read root certificate file \"{}\"",
                                file.display()
                            ),
                            e,
                        )
                    })?;
                    builder.set_verify(SslVerifyMode::PEER);
                }
                Roots::None => {}
            }
            let cert = match &self.cert {
                Some(named) => Some(named.clone()),
                None => default("postgresql.crt").filter(|f| f.exists()),
            };
            if let Some(cert) = cert {
                let key = self
                    .key
                    .clone()
                    .or_else(|| default("postgresql.key"))
                    .ok_or_else(|| {
                        Error::File("no key for the client certificate (set sslkey)".to_owned())
                    })?;
                check_key_access(&key)?;
                builder.set_certificate_chain_file(&cert).map_err(|e| {
                    tls_error(
                        &format!("could not read certificate file \"{}\"", cert.display()),
                        e,
                    )
                })?;
                builder
                    .set_private_key_file(&key, SslFiletype::PEM)
                    .map_err(|e| {
                        tls_error(
                            &format!("could not load private key file \"{}\"", key.display()),
                            e,
                        )
                    })?;
                builder.check_private_key().map_err(|e| {
                    tls_error(
                        &format!(
                            "private key file \"{}\" does not match the certificate",
                            key.display()
                        ),
                        e,
                    )
                })?;
            }
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let check_host = self.mode == SslMode::VerifyFull;
        connector.set_callback(move |config, _| {
            config.set_verify_hostname(check_host);
            Ok(())
        });
        Ok(connector)
    }

    fn roots(&self, default: Option<PathBuf>) -> Result<Roots, Error> {
        match self.rootcert.as_deref() {
            Some("system") if self.mode != SslMode::VerifyFull => Err(Error::Value {
                key: "sslmode",
                value: format!("{:?}", self.mode).to_lowercase(),
                expected: "verify-full, with sslrootcert=system",
            }),
            Some("system") => Ok(Roots::System),
            Some(file) => Ok(Roots::File(PathBuf::from(file))),
            None => match default {
                Some(file) if file.exists() => Ok(Roots::File(file)),
                _ if self.mode.verifies() => Err(Error::File(format!(
                    "sslmode {} needs root certificates: set sslrootcert to a file, or to \
                     system for the system's, or create {}",
                    if self.mode == SslMode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    },
                    default.map_or("~/.postgresql/root.crt".into(), |f| f.display().to_string()),
                ))),
                _ => Ok(Roots::None),
            },
        }
    }
}

enum Roots {
    None,
    System,
    File(PathBuf),
}

/// libpq's rule for a private key: no access for others, and none for the group unless
/// root owns it (then group read, for keys kept by a system's certificate tools).
fn check_key_access(key: &Path) -> Result<(), Error> {
    let meta = std::fs::metadata(key).map_err(|e| {
        Error::File(format!(
            "could not read private key file \"{}\": {e}",
            key.display()
        ))
    })?;
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if meta.mode() & forbidden != 0 {
        return Err(Error::File(format!(
            "private key file \"{}\" has group or world access; permissions should be \
             u=rw (0600) or less if owned by the server's user, u=rw,g=r (0640) or less if \
             owned by root",
            key.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_libpq_spells_them() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(SslMode::from_str(text), Ok(mode));
        }
        assert!(SslMode::from_str("allow").is_err(), "not supported");
        assert!(
            SslMode::from_str("VERIFY-FULL").is_err(),
            "libpq is case-sensitive"
        );
    }

    #[test]
    fn verifying_needs_root_certificates() {
        let ssl = |mode, rootcert: Option<&str>| Ssl {
            mode,
            rootcert: rootcert.map(str::to_owned),
            ..Ssl::default()
        };
        let nowhere = Path::new("/nonexistent-home");
        assert!(ssl(SslMode::Require, None).connector(Some(nowhere)).is_ok());
        let missing = ssl(SslMode::VerifyCa, None).connector(Some(nowhere));
        assert!(matches!(missing, Err(Error::File(m)) if m.contains("needs root certificates")));
        let unreadable = ssl(SslMode::VerifyFull, Some("/nonexistent/ca.crt")).connector(None);
        assert!(matches!(unreadable, Err(Error::File(m)) if m.contains("/nonexistent/ca.crt")));
        assert!(
            ssl(SslMode::Require, Some("system"))
                .connector(None)
                .is_err(),
            "the system's roots only with verify-full"
        );
        assert!(ssl(SslMode::VerifyFull, Some("system"))
            .connector(None)
            .is_ok());
    }

    #[test]
    fn a_client_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("conninfo-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("client.key");
        std::fs::write(&key, "not a key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ssl = Ssl {
            mode: SslMode::Require,
            cert: Some(dir.join("client.crt")),
            key: Some(key.clone()),
            ..Ssl::default()
        };
        let refused = ssl.connector(None);
        assert!(matches!(refused, Err(Error::File(m)) if m.contains("group or world access")));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let unreadable = ssl.connector(None);
        assert!(matches!(unreadable, Err(Error::File(m)) if m.contains("client.crt")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
