//! How pg_paxos reaches a member. Member connection strings are libpq's `key=value` pairs,
//! and some keys libpq users rely on are not tokio-postgres's: `sslmode=verify-ca` and
//! `verify-full`, `sslrootcert`, `sslcert`, `sslkey` and `passfile`. This crate takes
//! them out ([`pairs`]), finds a password in a password file ([`passfile`]), and builds
//! the TLS connector they describe ([`tls`]).
//!
//! A member's connection string is stored in every member's catalog and used by all of
//! them, so the files it names are read on whichever member connects, as that server's
//! operating-system user; and it never holds a password.
use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::Host;
use tokio_postgres::Config;

pub mod pairs;
pub mod passfile;
pub mod tls;

pub use tls::SslMode;

/// Why a connection string cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    Syntax(String),
    #[error("invalid value for \"{key}\": \"{value}\" ({expected})")]
    Value {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    File(String),
}

/// What a member's connection string says, its own keys apart.
#[derive(Clone, Debug)]
pub struct Member {
    /// Every key tokio-postgres knows, as given.
    pub config: Config,
    pub ssl: tls::Ssl,
    /// `passfile`, when given.
    pub passfile: Option<PathBuf>,
}

/// Where libpq looks when a connection string does not say: the operating-system user
/// that connects, its home directory, and `PGPASSFILE`.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub os_user: String,
    pub home: Option<PathBuf>,
    pub passfile_env: Option<PathBuf>,
}

impl Member {
    /// Reads `connection`: libpq's `key=value` syntax, with values quoted or not.
    pub fn parse(connection: &str) -> Result<Member, Error> {
        let mut rest = Vec::new();
        let mut ssl = tls::Ssl::default();
        let mut passfile = None;
        for (key, value) in pairs::parse(connection)? {
            match key.as_str() {
                "sslmode" => ssl.mode = SslMode::from_str(&value)?,
                "sslrootcert" => ssl.rootcert = Some(value),
                "sslcert" => ssl.cert = Some(PathBuf::from(value)),
                "sslkey" => ssl.key = Some(PathBuf::from(value)),
                "passfile" => passfile = Some(PathBuf::from(value)),
                _ => rest.push((key, value)),
            }
        }
        let config =
            Config::from_str(&pairs::render(&rest)).map_err(|e| Error::Syntax(e.to_string()))?;
        Ok(Member {
            config,
            ssl,
            passfile,
        })
    }

    /// The configuration and TLS connector to reach the member with: libpq's defaults for
    /// the role, the database and the files not named, and the password from the password
    /// file when one matches.
    pub fn connect_with(
        &self,
        defaults: &Defaults,
    ) -> Result<(Config, postgres_openssl::MakeTlsConnector), Error> {
        let mut config = self.config.clone();
        if config.get_user().is_none() {
            config.user(&defaults.os_user);
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or_default().to_owned();
            config.dbname(user);
        }
        config.ssl_mode(self.ssl.mode.for_tokio_postgres());
        let file = self.passfile.clone().or_else(|| {
            defaults
                .passfile_env
                .clone()
                .or_else(|| defaults.home.as_ref().map(|h| h.join(".pgpass")))
        });
        if let Some(file) = file {
            let (host, port) = first_host(&config);
            let key = passfile::Key {
                host: &host,
                port,
                dbname: config.get_dbname().unwrap_or_default(),
                user: config.get_user().unwrap_or_default(),
            };
            if let Some(password) = passfile::lookup(&file, &key, self.passfile.is_some())? {
                config.password(password);
            }
        }
        let connector = self.ssl.connector(defaults.home.as_deref())?;
        Ok((config, connector))
    }
}

/// The host and port a password file is searched for: the first host (a socket directory
/// counts as `localhost`, as for libpq), else the first `hostaddr`, and the first port.
fn first_host(config: &Config) -> (String, u16) {
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (Some(Host::Tcp(name)), _) => name.clone(),
        (Some(_), _) => "localhost".to_owned(),
        (None, Some(addr)) => addr.to_string(),
        (None, None) => "localhost".to_owned(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_own_keys_are_taken_out_and_the_rest_goes_to_tokio_postgres() {
        let m = Member::parse(
            "host=10.0.0.1 port=5433 sslmode=verify-full sslrootcert='/etc/pg paxos/ca.crt' \
             sslcert=/c.crt sslkey=/c.key passfile=/p user=member",
        )
        .unwrap();
        assert_eq!(m.ssl.mode, SslMode::VerifyFull);
        assert_eq!(m.ssl.rootcert.as_deref(), Some("/etc/pg paxos/ca.crt"));
        assert_eq!(m.ssl.cert, Some(PathBuf::from("/c.crt")));
        assert_eq!(m.ssl.key, Some(PathBuf::from("/c.key")));
        assert_eq!(m.passfile, Some(PathBuf::from("/p")));
        assert_eq!(m.config.get_ports(), &[5433]);
        assert_eq!(m.config.get_user(), Some("member"));
    }

    #[test]
    fn unknown_keys_and_modes_are_refused() {
        assert!(matches!(
            Member::parse("host=1.2.3.4 sslmode=verify-some"),
            Err(Error::Value { key: "sslmode", .. })
        ));
        assert!(matches!(
            Member::parse("host=1.2.3.4 colour=blue"),
            Err(Error::Syntax(_))
        ));
    }

    #[test]
    fn libpq_defaults_fill_the_role_and_database() {
        let m = Member::parse("host=1.2.3.4 sslmode=disable").unwrap();
        let defaults = Defaults {
            os_user: "pgsrv".into(),
            home: None,
            passfile_env: None,
        };
        let (config, _) = m.connect_with(&defaults).unwrap();
        assert_eq!(config.get_user(), Some("pgsrv"));
        assert_eq!(config.get_dbname(), Some("pgsrv"));
        assert_eq!(config.get_password(), None);
    }

    #[test]
    fn the_password_file_fills_the_password() {
        let dir = std::env::temp_dir().join(format!("conninfo-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        passfile::tests::write_private(&file, "1.2.3.4:5432:db:member:s3cret\n");
        let m = Member::parse(&format!(
            "host=1.2.3.4 dbname=db user=member sslmode=disable passfile={}",
            file.display()
        ))
        .unwrap();
        let (config, _) = m.connect_with(&Defaults::default()).unwrap();
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        let other = Member::parse("host=1.2.3.4 dbname=db user=other sslmode=disable").unwrap();
        let defaults = Defaults {
            passfile_env: Some(file.clone()),
            ..Defaults::default()
        };
        let (config, _) = other.connect_with(&defaults).unwrap();
        assert_eq!(config.get_password(), None, "no line for that role");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
