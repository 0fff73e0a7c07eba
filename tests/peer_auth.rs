//! Members that refuse anything but authenticated peers: TLS with client certificates
//! (`hostssl ... cert`), and `scram-sha-256` with passwords from a password file. The
//! servers accept this test's own sessions only on their Unix sockets.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio_postgres::{Client, NoTls};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `program` with `args` in `dir`; panics with its output when it fails.
fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Writes `text` to `dir/name`, readable by the servers' OS user only.
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    give_to_servers(&path);
    path
}

/// Makes `path` the servers' (the `postgres` user's when we are root), mode 0600.
fn give_to_servers(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if running_as_root() {
        run(
            Path::new("/"),
            "chown",
            &["postgres:postgres", path.to_str().unwrap()],
        );
    }
}

/// A directory for certificates and password files, beside the servers' data.
fn secrets_dir(cluster: &cluster::Cluster) -> PathBuf {
    let dir = cluster.base_dir().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    if running_as_root() {
        run(
            Path::new("/"),
            "chown",
            &["postgres:postgres", dir.to_str().unwrap()],
        );
    }
    dir
}

/// A test CA, and certificates it signed: `server` for 127.0.0.1, `elsewhere` for
/// 10.9.9.9, `client` for role postgres; and `other-ca.crt`, a CA that signed nothing here.
fn make_certificates(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
        let subject = format!("/CN=pg_paxos test {ca}");
        let (keyout, out) = (format!("{ca}.key"), format!("{ca}.crt"));
        args.extend([subject.as_str(), "-keyout", &keyout, "-out", &out]);
        args.extend(key);
        run(dir, "openssl", &args);
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("elsewhere.ext"), "subjectAltName=IP:10.9.9.9\n").unwrap();
    let certificates = [
        ("server", "/CN=127.0.0.1"),
        ("elsewhere", "/CN=10.9.9.9"),
        ("client", "/CN=postgres"),
    ];
    for (name, subject) in certificates {
        let (keyout, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let mut req = vec![
            "req", "-new", "-subj", subject, "-keyout", &keyout, "-out", &csr,
        ];
        req.extend(key);
        run(dir, "openssl", &req);
        let mut sign = vec!["x509", "-req", "-days", "2", "-in", &csr, "-CA", "ca.crt"];
        sign.extend(["-CAkey", "ca.key", "-CAcreateserial", "-out", &crt]);
        let ext = format!("{name}.ext");
        if name != "client" {
            sign.extend(["-extfile", &ext]);
        }
        run(dir, "openssl", &sign);
    }
    for file in std::fs::read_dir(dir).unwrap() {
        give_to_servers(&file.unwrap().path());
    }
}

/// A session of this test on node `i`'s Unix socket (`local all all trust`).
async fn local_session(cluster: &cluster::Cluster, i: usize) -> Client {
    let connstr = format!(
        "host={} port={} user=postgres dbname=postgres",
        cluster.base_dir().display(),
        cluster.node(i).port
    );
    let (client, connection) = tokio_postgres::connect(&connstr, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to node {i}'s socket: {e}"));
    tokio::spawn(connection);
    client
}

/// Replaces every node's pg_hba.conf with `hba` (Unix sockets stay trusted for this test),
/// sets `settings` with ALTER SYSTEM, and reloads; returns a session on each node.
async fn require(
    cluster: &cluster::Cluster,
    hba: &str,
    settings: &[(&str, String)],
) -> Vec<Client> {
    let mut sessions = Vec::new();
    for i in 0..cluster.nodes().len() {
        let hba_file = cluster.node(i).data_dir().join("pg_hba.conf");
        std::fs::write(&hba_file, format!("local all all trust\n{hba}\n")).unwrap();
        let session = local_session(cluster, i).await;
        for (name, value) in settings {
            session
                .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
                .await
                .unwrap_or_else(|e| panic!("setting {name}: {e}"));
        }
        session
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        session
            .batch_execute("CREATE EXTENSION pg_paxos")
            .await
            .unwrap();
        sessions.push(session);
    }
    // The postmaster reloads in the background: wait until it refuses plain TCP.
    for i in 0..cluster.nodes().len() {
        eventually(LIMIT, || async move {
            match cluster.node(i).connect().await {
                Ok(_) => Err(format!("node {i} still takes plain TCP connections")),
                Err(_) => Ok(()),
            }
        })
        .await;
    }
    sessions
}

/// `sessions[0]` creates the group with `connstr(0)`; the others join through node 0.
async fn form(sessions: &[Client], connstr: impl Fn(usize) -> String) {
    sessions[0]
        .execute("SELECT paxos_create_group($1, $2)", &[&GROUP, &connstr(0)])
        .await
        .expect("creating the group");
    for (i, session) in sessions.iter().enumerate().skip(1) {
        session
            .query_one(
                "SELECT paxos_join_group($1, $2, $3)",
                &[&GROUP, &connstr(0), &connstr(i)],
            )
            .await
            .unwrap_or_else(|e| panic!("node {i} joins: {}", describe(&e)));
    }
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Appends on every member, and checks that every member holds the same log.
async fn append_everywhere(sessions: &[Client]) {
    for (i, session) in sessions.iter().enumerate() {
        append(session, &format!("from node {i}"))
            .await
            .unwrap_or_else(|e| panic!("appending on node {i}: {}", describe(&e)));
    }
    let mut logs = Vec::new();
    for session in sessions {
        logs.push(applied_log(session).await);
    }
    assert_same_gap_free_logs(&logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_require_client_certificates_form_a_group_over_tls() {
    let cluster = start("peer_tls", 3);
    let dir = secrets_dir(&cluster);
    make_certificates(&dir);
    let file = |name: &str| dir.join(name).display().to_string();
    let sessions = require(
        &cluster,
        "hostssl all all 127.0.0.1/32 cert",
        &[
            ("ssl", "on".into()),
            ("ssl_cert_file", file("server.crt")),
            ("ssl_key_file", file("server.key")),
            ("ssl_ca_file", file("ca.crt")),
        ],
    )
    .await;
    let connstr = |i: usize, extra: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslrootcert={} {extra}",
            cluster.node(i).port,
            file("ca.crt"),
        )
    };
    let certified = |i: usize| {
        connstr(
            i,
            &format!(
                "sslmode=verify-full sslcert={} sslkey={}",
                file("client.crt"),
                file("client.key")
            ),
        )
    };
    form(&sessions[..2], certified).await;

    // Anything less is refused, and changes nothing.
    let attempts = [
        (
            "without TLS",
            connstr(2, "sslmode=disable"),
            "no pg_hba.conf entry",
        ),
        (
            "without a client certificate",
            connstr(2, "sslmode=verify-full"),
            "certificate",
        ),
        (
            "trusting another CA",
            format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full \
                 sslrootcert={} sslcert={} sslkey={}",
                cluster.node(2).port,
                file("other-ca.crt"),
                file("client.crt"),
                file("client.key")
            ),
            "certificate verify failed",
        ),
    ];
    for (what, own, expected) in attempts {
        let refused = sessions[2]
            .query_one(
                "SELECT paxos_join_group($1, $2, $3)",
                &[&GROUP, &certified(0), &own],
            )
            .await
            .expect_err(what);
        let message = describe(&refused);
        assert!(message.contains(expected), "{what}: {message}");
        assert_eq!(
            voters(&sessions[0]).await,
            2,
            "{what}: the group is unchanged"
        );
    }

    // verify-full checks that the certificate names the member's address; verify-ca not.
    let other = "ALTER SYSTEM SET ssl_cert_file = 'elsewhere.crt'";
    let other_key = "ALTER SYSTEM SET ssl_key_file = 'elsewhere.key'";
    for sql in [
        other.replace("elsewhere.crt", &file("elsewhere.crt")),
        other_key.replace("elsewhere.key", &file("elsewhere.key")),
    ] {
        sessions[2].batch_execute(&sql).await.unwrap();
    }
    sessions[2]
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    eventually(LIMIT, || async {
        let fresh = local_session(&cluster, 2).await;
        let row = fresh
            .query_one("SHOW ssl_cert_file", &[])
            .await
            .map_err(|e| e.to_string())?;
        let current: String = row.get(0);
        current
            .ends_with("elsewhere.crt")
            .then_some(())
            .ok_or(current)
    })
    .await;
    let refused = sessions[2]
        .query_one(
            "SELECT paxos_join_group($1, $2, $3)",
            &[&GROUP, &certified(0), &certified(2)],
        )
        .await
        .expect_err("a certificate for another address");
    let message = describe(&refused);
    assert!(message.contains("IP address mismatch"), "{message}");
    assert_eq!(voters(&sessions[0]).await, 2);
    let verify_ca = |i: usize| certified(i).replace("verify-full", "verify-ca");
    sessions[2]
        .query_one(
            "SELECT paxos_join_group($1, $2, $3)",
            &[&GROUP, &certified(0), &verify_ca(2)],
        )
        .await
        .unwrap_or_else(|e| panic!("node 2 joins with verify-ca: {}", describe(&e)));
    append_everywhere(&sessions).await;

    // Every peer connection on every member is TLS, from the certificate's role.
    for (i, session) in sessions.iter().enumerate() {
        let (tls, plain): (i64, i64) = session
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl AND s.client_dn = '/CN=postgres'), \
                        count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name LIKE 'pg_paxos %'",
                &[],
            )
            .await
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
        assert!(tls > 0, "node {i} serves no peer over TLS");
        assert_eq!(plain, 0, "node {i} serves peers without TLS");
    }
}

/// Node 2 joins once the refused attempts are over.
async fn form_rest(sessions: &[Client], connstr: &impl Fn(usize) -> String) {
    sessions[2]
        .query_one(
            "SELECT paxos_join_group($1, $2, $3)",
            &[&GROUP, &connstr(0), &connstr(2)],
        )
        .await
        .unwrap_or_else(|e| panic!("node 2 joins: {}", describe(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_require_scram_find_passwords_in_a_password_file() {
    const SECRET: &str = "s3cret-never-stored";
    let cluster = start("peer_scram", 3);
    let dir = secrets_dir(&cluster);
    let passfile = private_file(
        &dir,
        "pgpass",
        &format!("127.0.0.1:*:*:postgres:{SECRET}\n"),
    );
    let sessions = require(
        &cluster,
        "host all all 127.0.0.1/32 scram-sha-256",
        &[("password_encryption", "scram-sha-256".into())],
    )
    .await;
    for session in &sessions {
        session
            .batch_execute(&format!("ALTER ROLE postgres PASSWORD '{SECRET}'"))
            .await
            .unwrap();
    }
    let connstr = |i: usize, passfile: &Path| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres passfile={}",
            cluster.node(i).port,
            passfile.display()
        )
    };
    let with_passfile = |i: usize| connstr(i, &passfile);
    form(&sessions[..2], with_passfile).await;

    // A password file others can read is not used (as libpq does), and says so.
    let open = private_file(&dir, "pgpass-open", &format!("*:*:*:*:{SECRET}\n"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let refused = sessions[2]
        .query_one(
            "SELECT paxos_join_group($1, $2, $3)",
            &[&GROUP, &with_passfile(0), &connstr(2, &open)],
        )
        .await
        .expect_err("a password file others can read");
    assert!(
        describe(&refused).contains("group or world access"),
        "{}",
        describe(&refused)
    );
    assert_eq!(voters(&sessions[0]).await, 2);
    // A password in the connection string is refused before it is stored anywhere.
    let inline = format!("{} password={SECRET}", with_passfile(2));
    let refused = sessions[2]
        .query_one(
            "SELECT paxos_join_group($1, $2, $3)",
            &[&GROUP, &with_passfile(0), &inline],
        )
        .await
        .expect_err("a password in the connection string");
    assert!(
        !describe(&refused).contains(SECRET),
        "{}",
        describe(&refused)
    );

    form_rest(&sessions, &with_passfile).await;
    append_everywhere(&sessions).await;

    // The password is in no catalog table, log entry or view of pg_paxos.
    for (i, session) in sessions.iter().enumerate() {
        let found: i64 = session
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, \
                 LATERAL (SELECT query_to_xml(format('SELECT * FROM %I.%I', n.nspname, c.relname), \
                                              true, false, '')::text AS rows) r \
                 WHERE n.nspname = 'pgp_metadata' AND c.relkind IN ('r', 'v') \
                   AND r.rows LIKE '%' || $1 || '%'",
                &[&SECRET],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 0, "node {i} stores the password");
    }
}
