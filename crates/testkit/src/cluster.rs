//! A throw-away cluster: PostgreSQL, nats-server and `n` real
//! `audin-server` nodes on them (`--cluster`, `--node-id node-i`), for the
//! cluster's end-to-end tests and its benchmark.

use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};

use crate::nats::TempNats;
use crate::postgres::TempPostgres;
use crate::{ServerOptions, ServerProcess};

/// The engines and nodes of one cluster; everything stops when dropped.
#[derive(Debug)]
pub struct TempCluster {
    /// Node `i` (1-based) is `nodes[i - 1]`.
    pub nodes: Vec<ServerProcess>,
    /// The dev account's API key (the same on every node).
    pub key: String,
    /// The nats-server the nodes share.
    pub nats: TempNats,
    /// The PostgreSQL server holding their one database.
    pub pg: TempPostgres,
}

impl TempCluster {
    /// Starts PostgreSQL, NATS and `n` nodes, each from `base` (extra
    /// flags, release build). With `advertise` each node listens on a port
    /// known before it starts and advertises it (`--advertise-url`), so
    /// accepted calls steer audio sockets to the call's node. The caller
    /// checks first that nats-server and PostgreSQL are installed.
    pub async fn start(n: usize, base: ServerOptions, advertise: bool) -> Result<TempCluster> {
        let pg = TempPostgres::start_new()?;
        let url = pg.create_database()?;
        let nats = TempNats::start_new()?;
        let mut nodes = Vec::new();
        // One after the other: the first creates the schema.
        for i in 1..=n {
            let mut opts = ServerOptions {
                database: Some(PathBuf::from(&url)),
                ..base.clone()
            }
            .arg("--cluster", nats.url())
            .arg("--node-id", format!("node-{i}"));
            if advertise {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                opts.listen = Some(([127, 0, 0, 1], port).into());
                opts = opts.arg("--advertise-url", format!("http://127.0.0.1:{port}"));
            }
            let node = ServerProcess::spawn(opts)
                .await
                .with_context(|| format!("node {i} starts"))?;
            nodes.push(node);
        }
        let key = nodes.first().context("a cluster has nodes")?.key();
        ensure!(
            nodes.iter().all(|node| node.key() == key),
            "every node of one database prints the same dev key"
        );
        Ok(TempCluster {
            nodes,
            key,
            nats,
            pg,
        })
    }
}
