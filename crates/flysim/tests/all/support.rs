//! Shared helpers: simulator start-up and common fixtures (the client's transport is the crate's
//! `BlockingTransport`).

use std::time::{Duration, Instant};

use kiloclaw_core::fly::{
    CreateMachineRequest, CreateVolumeRequest, FlyApi, FlyClient, FlyClientConfig, GuestConfig,
    Machine, MachineConfig, MachineMount, MachineService, MachineState, ServicePort, Volume,
    WaitRequest, WaitState,
};
pub use kiloclaw_flysim::BlockingTransport;
use kiloclaw_flysim::{BlockingSim, Delays, SimConfig, Simulator};

pub const TOKEN: &str = "test-token";
pub const APP: &str = "acct-test";
pub const ORG: &str = "kilo";
pub const GATEWAY_TOKEN: &str = "gw-secret-123";

pub type Client = FlyClient<BlockingTransport>;

pub struct Env {
    pub sim: BlockingSim,
    pub fly: Client,
    pub http: reqwest::blocking::Client,
}

impl Env {
    pub fn admin(&self) -> &kiloclaw_flysim::SimAdmin {
        self.sim.admin()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.api_url())
    }
}

pub fn config() -> SimConfig {
    SimConfig {
        api_tokens: vec![TOKEN.to_owned()],
        apps: vec![(APP.to_owned(), ORG.to_owned())],
        delays: Delays {
            create: Duration::from_millis(5),
            boot: Duration::from_millis(30),
            stop: Duration::from_millis(30),
            replace: Duration::from_millis(30),
            destroy: Duration::from_millis(20),
            ..Delays::default()
        },
        ..SimConfig::default()
    }
}

pub fn start_with(config: SimConfig) -> Env {
    let sim = Simulator::start_blocking(config).expect("simulator starts");
    let fly = client_for(sim.api_url(), TOKEN);
    Env {
        sim,
        fly,
        http: reqwest::blocking::Client::new(),
    }
}

pub fn start() -> Env {
    start_with(config())
}

pub fn client_for(base_url: &str, token: &str) -> Client {
    FlyClient::new(
        BlockingTransport::new().expect("reqwest client"),
        &FlyClientConfig::new(token).with_base_url(base_url),
    )
}

/// The control plane's machine config: gateway on 18789 behind 443, volume at /root.
pub fn machine_config(volume: Option<&str>, user: &str) -> MachineConfig {
    let mut config = MachineConfig {
        image: "registry.fly.io/kiloclaw-machines:latest".to_owned(),
        ..Default::default()
    };
    config.env.insert(
        "OPENCLAW_GATEWAY_TOKEN".to_owned(),
        GATEWAY_TOKEN.to_owned(),
    );
    config.guest = Some(GuestConfig {
        cpu_kind: Some("shared".to_owned()),
        cpus: 2,
        memory_mb: 4096,
        ..Default::default()
    });
    config.services.push(MachineService {
        protocol: "tcp".to_owned(),
        internal_port: 18789,
        ports: vec![ServicePort {
            port: Some(443),
            handlers: vec!["tls".to_owned(), "http".to_owned()],
            ..Default::default()
        }],
        autostart: Some(false),
        autostop: Some(kiloclaw_core::fly::Autostop::Off),
        extra: Default::default(),
    });
    if let Some(volume) = volume {
        config.mounts.push(MachineMount {
            volume: volume.to_owned(),
            path: "/root".to_owned(),
            name: None,
            extra: Default::default(),
        });
    }
    config
        .metadata
        .insert("kiloclaw_user_id".to_owned(), user.to_owned());
    config
}

pub fn create_volume(env: &Env, name: &str, region: &str) -> Volume {
    env.fly
        .create_volume(
            APP,
            &CreateVolumeRequest {
                name: name.to_owned(),
                region: region.to_owned(),
                size_gb: 10,
                ..Default::default()
            },
        )
        .expect("volume created")
}

pub fn create_machine(env: &Env, volume: Option<&str>, user: &str) -> Machine {
    env.fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: machine_config(volume, user),
                name: Some(format!("sandbox-{user}")),
                ..Default::default()
            },
        )
        .expect("machine created")
}

pub fn wait_started(env: &Env, id: &str) {
    env.fly
        .wait_machine(APP, id, &WaitRequest::new(WaitState::Started, 10))
        .expect("reaches started");
}

/// Stops and waits the way the control plane does: stop, read instance_id, wait for stopped with it.
pub fn stop_and_wait(env: &Env, id: &str) {
    env.fly.stop_machine(APP, id).expect("stop accepted");
    let instance = env.fly.get_machine(APP, id).expect("get").instance_id;
    env.fly
        .wait_machine(
            APP,
            id,
            &WaitRequest::new(WaitState::Stopped, 10).with_instance_id(instance),
        )
        .expect("reaches stopped");
}

pub fn started_machine(env: &Env, volume: Option<&str>, user: &str) -> Machine {
    let machine = create_machine(env, volume, user);
    wait_started(env, &machine.id);
    env.fly.get_machine(APP, &machine.id).expect("get")
}

/// Polls until `check` holds (bounded).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

pub fn state_of(env: &Env, id: &str) -> MachineState {
    env.fly.get_machine(APP, id).expect("get").state
}
