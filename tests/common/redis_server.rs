//! A real `redis-server` (Debian's) for the Redis-mode tests: one per test, on a loopback peer
//! port ([`peer_port`]), in its own temp dir, no persistence, killed by pid on drop. It can be paused
//! (`SIGSTOP`: connections stay open and nothing answers, as a hung Redis), stopped and
//! restarted empty on the same port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::procfs::{Transport, holds_port};
use super::{Proxy, TempDir, get, peer_port, signal, wait_until};

pub struct RedisServer {
    pub port: u16,
    /// `--requirepass`, if any.
    pub password: Option<String>,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_password(None)
    }

    /// A server that answers only clients that AUTH with `password`.
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        let password = password.map(String::from);
        let mut server = RedisServer { port: peer_port(), password, child: None, dir: TempDir::new("redis") };
        assert!(server.spawn(), "redis-server did not listen on {} (apt-get install redis-server)", server.port);
        server
    }

    /// Starts redis-server on `port`; whether it listens there (its own socket) within 10 s.
    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.0.join("redis.log")).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .arg("--dir")
            .arg(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (apt-get install redis-server)");
        let (pid, port) = (child.id(), self.port);
        self.child = Some(child);
        wait_until(Duration::from_secs(10), || holds_port(pid, port, Transport::Tcp))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "redis-server did not come back on {}", self.port);
    }

    /// `SIGSTOP`: the kernel still accepts connections and data, nothing answers.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// `SIGCONT` after [`RedisServer::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// `redis-cli ARGS...` on database 0, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_db(0, args)
    }

    /// `redis-cli -n DB ARGS...` (with the password, if any), its output trimmed.
    pub fn cli_db(&self, db: u32, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string(), "-n", &db.to_string(), "--raw"]);
        if let Some(password) = &self.password {
            cmd.args(["--no-auth-warning", "-a", password]);
        }
        let out = cmd.args(args).output().expect("run redis-cli (apt-get install redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The flags of a proxy in redis mode on this server.
    pub fn flags(&self, prefix: Option<&str>) -> Vec<String> {
        let mut flags = vec!["--load-balancer".into(), "redis".into(), "--redis-port".into(), self.port.to_string()];
        if let Some(prefix) = prefix {
            flags.extend(["--redis-key-prefix".into(), prefix.into()]);
        }
        flags
    }

    /// A proxy in redis mode on this server with `extra` flags.
    pub fn proxy(&self, prefix: Option<&str>, extra: &[&str]) -> Proxy {
        let flags = self.flags(prefix);
        let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        flags.extend_from_slice(extra);
        Proxy::start(&flags)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop(); // SIGKILL ends a paused server too
    }
}

/// The value of the first `/metrics` sample whose line starts with `name` (a family name, or a
/// name with its labels).
pub fn metric(proxy: &Proxy, name: &str) -> Option<f64> {
    let text = get(&proxy.api_addr(), "/metrics").body;
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// gRPC HealthCheck: its status and errors.
pub fn health(proxy: &Proxy) -> (String, Vec<String>) {
    use streamgate::control::grpc::proto::Empty;
    use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = ModuleServiceClient::connect(format!("http://127.0.0.1:{}", proxy.grpc)).await.unwrap();
        let h = client.health_check(Empty {}).await.unwrap().into_inner();
        (h.status, h.errors)
    })
}
