use cluster::{Cluster, ClusterOptions};
use std::time::Instant;
#[test]
fn scratch() {
    let c = Cluster::start(ClusterOptions { nodes: 2, preload_pg_paxos: false, extra_conf: vec![], name: "scratch".into() }).unwrap();
    let t = Instant::now(); c.kill(0).unwrap(); eprintln!("kill took {:?}", t.elapsed());
    let l = std::net::TcpListener::bind(("127.0.0.1", c.node(0).port)).unwrap();
    let e = c.restart(0).unwrap_err(); eprintln!("ERR: {e}");
    drop(l);
    let t = Instant::now(); c.restart(0).unwrap(); eprintln!("restart took {:?}", t.elapsed());
    let t = Instant::now(); c.stop(0).unwrap(); eprintln!("stop took {:?}", t.elapsed());
    let t = Instant::now(); c.restart(0).unwrap(); eprintln!("restart took {:?}", t.elapsed());
    c.pause(1).unwrap();
    let t = Instant::now(); c.stop(1).unwrap(); eprintln!("stop of paused took {:?}", t.elapsed());
    c.restart(1).unwrap();
    c.pause(1).unwrap();
    let t = Instant::now(); c.kill(1).unwrap(); eprintln!("kill of paused took {:?}", t.elapsed());
    eprintln!("{:?}", c.pause(1).unwrap_err());
    c.resume(1).unwrap();
    c.restart(1).unwrap();
    let t = Instant::now(); drop(c); eprintln!("drop took {:?}", t.elapsed());
}
