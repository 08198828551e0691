//! Forwarding between two hosts started in this process (`doppel_host::run`), talking real HTTP
//! on loopback: a standby sends a request on to the active host over the peer listener, and a
//! client cannot make a host believe a request was forwarded already. Crashes, kills and partitions are the process
//! tests' (`tests/integration`).

use std::time::Duration;

use doppel_api::{DeployRequest, InvitationAnswer, InviteRequest, ModuleInfo, ServiceInfo};
use doppel_host::{HostConfig, IngressLimits, JoinTarget, Started};

struct InProcess {
    /// A client of the admin API, trusting the host's CA.
    http: reqwest::Client,
    started: Started,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// The same operator key for every host of the test's cluster, in each host's directory.
fn key_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("key");
    std::fs::write(&path, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    path
}

impl InProcess {
    async fn start(name: &str, join: Option<JoinTarget>) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let config = HostConfig {
            name: name.into(),
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            peer: "127.0.0.1:0".parse().unwrap(),
            ingress: IngressLimits::default(),
            max_module_size: 64 << 20,
            grace: Duration::from_secs(5),
            join,
            advertise: None,
            snapshot_every: 10_000,
            leader_lease: None,
            labels: Default::default(),
            require: Default::default(),
            cert_lifetime: None,
            key: Some(doppel_host::sealing::KeySource::File(key_file(&dir))),
        };
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(doppel_host::run(
            config,
            move |started| {
                let _ = ready.send(started.clone());
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let started = is_ready
            .await
            .expect("the host stopped before it was ready");
        let token = std::fs::read_to_string(&started.token_file).unwrap();
        let ca = std::fs::read_to_string(dir.path().join("data/tls/ca.pem")).unwrap();
        let roots = doppel_trust::certificates(&ca).unwrap();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(doppel_trust::tls::operator_client(&roots).unwrap())
            .build()
            .unwrap();
        InProcess {
            http,
            started,
            token: token.trim().to_string(),
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    fn admin(&self, path: &str) -> String {
        format!("https://{}{path}", self.started.admin)
    }

    fn service(&self, path: &str) -> String {
        format!("http://{}{path}", self.started.listen)
    }

    /// An admin API call, its answer decoded.
    async fn ask<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> T {
        let answer = request.bearer_auth(&self.token).send().await.unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
        let bytes = answer.bytes().await.unwrap();
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&bytes)))
    }

    /// How many requests for `service` this host served.
    async fn requests(&self, service: &str) -> u64 {
        let path = self.admin(&format!("/v1/services/{service}"));
        let info: ServiceInfo = self.ask(self.http.get(path)).await;
        info.requests
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forwards_to_the_active_host_and_a_client_cannot_claim_it_was_forwarded() {
    let http = reqwest::Client::new();
    let a = InProcess::start("a", None).await;
    let invitation: InvitationAnswer = a
        .ask(
            a.http
                .post(a.admin("/v1/hosts/invitations"))
                .json(&InviteRequest {
                    name: "b".into(),
                    labels: Default::default(),
                    expires_secs: 60,
                }),
        )
        .await;
    let b = InProcess::start(
        "ignored",
        Some(JoinTarget {
            url: a.started.peer.to_string(),
            token: invitation.token,
        }),
    )
    .await;
    assert_eq!(b.started.name, "b", "the invitation names the host");
    assert!(b.started.joined);

    // Deployed through `a`: active there, a standby on `b`.
    let upload = a
        .http
        .post(a.admin("/v1/modules"))
        .body(std::fs::read(doppel_guests::HELLO).unwrap());
    let module: ModuleInfo = a.ask(upload).await;
    let deploy = a
        .http
        .put(a.admin("/v1/services/hello"))
        .json(&DeployRequest {
            module: module.digest,
            ..DeployRequest::default()
        });
    let deployed: ServiceInfo = a.ask(deploy).await;
    assert_eq!(deployed.active, ["a"]);

    // Through `b`: sent on to `a`, which answers.
    let answer = http.get(b.service("/hello/")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(a.requests("hello").await, 1);
    assert_eq!(b.requests("hello").await, 0);

    // A client claiming the request was forwarded already is not believed (only a peer, on the
    // peer listener, can say so): `b` still sends it on to `a`.
    let answer = http
        .get(b.service("/hello/"))
        .header("x-doppel-forwarded-by", "7")
        .header("x-doppel-forwarded-by", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(a.requests("hello").await, 2);
    assert_eq!(b.requests("hello").await, 0);

    b.stop().await;
    a.stop().await;
}
