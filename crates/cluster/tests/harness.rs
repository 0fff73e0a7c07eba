//! The harness against plain PostgreSQL (no extension needed): start, kill, restart, stop,
//! pause, resume, and a teardown that leaves no process and no directory behind.

use std::error::Error as StdError;
use std::fs;
use std::path::Path;
use std::time::Duration;

use cluster::{Cluster, ClusterOptions, Node};

type TestResult<T = ()> = Result<T, Box<dyn StdError + Send + Sync>>;

/// `SELECT 1` over a fresh tokio-postgres connection, bounded by `limit`.
async fn select_one(node: &Node, limit: Duration) -> TestResult<i32> {
    let query = async {
        let client = node.connect().await?;
        let row = client.query_one("SELECT 1", &[]).await?;
        TestResult::Ok(row.get::<_, i32>(0))
    };
    tokio::time::timeout(limit, query).await?
}

/// Asserts that node answers `SELECT 1` through both connect() and psql().
async fn assert_answers(node: &Node) -> TestResult {
    assert_eq!(
        select_one(node, Duration::from_secs(10)).await?,
        1,
        "{node}"
    );
    assert_eq!(node.psql("SELECT 1")?, "1", "{node}");
    Ok(())
}

/// Processes whose command line or working directory mentions `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(dir) {
            found.push(format!("{pid}: {cmdline} (cwd {})", cwd.display()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn start_kill_restart_pause_resume_teardown() -> TestResult {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        preload_pg_paxos: false,
        extra_conf: vec!["work_mem = '7MB'".into()],
        name: "harness".into(),
    })?;
    let base = cluster.base_dir().to_path_buf();
    assert!(base.is_dir());

    for (i, node) in cluster.nodes().iter().enumerate() {
        assert_eq!(node.index, i);
        assert_eq!(node.node_id, format!("harness-node{i}"));
        assert!(cluster.is_running(i));
        assert_answers(node).await?;
        // The settings the harness promises, and the extra line after them.
        assert_eq!(node.psql("SHOW port")?, node.port.to_string());
        assert_eq!(node.psql("SHOW listen_addresses")?, "127.0.0.1");
        assert_eq!(node.psql("SHOW fsync")?, "on");
        assert_eq!(node.psql("SHOW work_mem")?, "7MB");
        assert_eq!(node.psql("SHOW shared_preload_libraries")?, "");
        assert!(node.log_path().is_file());
    }
    let err = cluster
        .node(0)
        .psql("SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
    assert!(
        cluster.restart(0).is_err(),
        "restart of a running node must fail"
    );

    // Crash: node 1 is gone, the others do not care.
    cluster.kill(1)?;
    assert!(!cluster.is_running(1));
    assert!(cluster.node(1).connect().await.is_err());
    assert!(cluster.node(1).psql("SELECT 1").is_err());
    assert_answers(cluster.node(0)).await?;
    assert_answers(cluster.node(2)).await?;
    cluster.restart(1)?;
    assert!(cluster.is_running(1));
    assert_answers(cluster.node(1)).await?;

    // Clean stop and start again.
    cluster.stop(0)?;
    assert!(!cluster.is_running(0));
    assert!(cluster.node(0).psql("SELECT 1").is_err());
    cluster.restart(0)?;
    assert_answers(cluster.node(0)).await?;

    // Hang: node 2 accepts TCP connections but answers nothing.
    let client = cluster.node(2).connect().await?;
    cluster.pause(2)?;
    assert!(cluster.is_running(2), "a paused node is still running");
    let hung = tokio::time::timeout(Duration::from_secs(1), client.query_one("SELECT 1", &[]));
    assert!(
        hung.await.is_err(),
        "a query to a paused node must time out"
    );
    assert!(select_one(cluster.node(2), Duration::from_secs(1))
        .await
        .is_err());
    assert_answers(cluster.node(0)).await?;
    cluster.resume(2)?;
    let row =
        tokio::time::timeout(Duration::from_secs(10), client.query_one("SELECT 1", &[])).await??;
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_answers(cluster.node(2)).await?;

    // Teardown must also handle a paused node and a killed one.
    cluster.pause(0)?;
    cluster.kill(1)?;
    drop(client);
    drop(cluster);
    assert!(!base.exists(), "{} survived the drop", base.display());
    let left = processes_under(&base);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    Ok(())
}

/// Cluster directories of this process whose name starts with `pg_paxos-<name>-`.
fn base_dirs_named(name: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("pg_paxos-{name}-{}-", std::process::id());
    fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn failed_start_explains_itself_and_cleans_up() {
    let err = Cluster::start(ClusterOptions {
        nodes: 2,
        preload_pg_paxos: false,
        extra_conf: vec!["no_such_setting = 1".into()],
        name: "badconf".into(),
    })
    .expect_err("an unknown setting must stop the start");
    let message = err.to_string();
    assert!(message.contains("pg_ctl start"), "{message}");
    // The server log's tail is quoted.
    assert!(message.contains("no_such_setting"), "{message}");
    assert!(base_dirs_named("badconf").is_empty());
}

#[test]
fn drop_during_a_panic_cleans_up() {
    let base = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let cluster = Cluster::start(ClusterOptions {
            nodes: 1,
            preload_pg_paxos: false,
            extra_conf: Vec::new(),
            name: "panics".into(),
        })
        .expect("cluster starts");
        *base.lock().unwrap() = Some(cluster.base_dir().to_path_buf());
        cluster.pause(0).expect("pause");
        panic!("a test failing with a paused node");
    });
    assert!(outcome.is_err());
    let base = base.lock().unwrap().take().expect("the cluster started");
    assert!(!base.exists(), "{} survived the panic", base.display());
    let left = processes_under(&base);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
