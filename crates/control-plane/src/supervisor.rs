//! Child processes (etcd, kube-apiserver) that can never outlive the program that started them.
//!
//! One keeper thread forks every child and is the only thread that touches them. Each child is
//! started with `PR_SET_PDEATHSIG=SIGKILL`, which the kernel fires when the *forking thread* exits:
//! because the keeper thread lives exactly as long as the [`Supervisor`], the children die with it,
//! and with the whole process even if it is SIGKILLed. A normal stop is SIGTERM, a grace period,
//! then SIGKILL, always followed by a wait so no zombie is left behind.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a child has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the keeper notices a child that exited on its own.
const POLL: Duration = Duration::from_millis(100);

/// What to run, and where its output goes.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// A child as seen from outside the keeper thread.
#[derive(Debug, Clone)]
pub struct ProcessState {
    pub name: &'static str,
    pub pid: u32,
    pub exit: Option<ExitStatus>,
}

enum Command_ {
    Spawn(ProcessSpec, mpsc::Sender<io::Result<u32>>),
    Restart(&'static str, mpsc::Sender<io::Result<u32>>),
    Stop,
}

/// Owns the keeper thread; dropping it stops every child.
pub struct Supervisor {
    commands: mpsc::Sender<Command_>,
    keeper: Option<JoinHandle<()>>,
    states: Arc<Mutex<Vec<ProcessState>>>,
}

impl Supervisor {
    pub fn new() -> io::Result<Self> {
        let (commands, inbox) = mpsc::channel();
        let states = Arc::new(Mutex::new(Vec::new()));
        let keeper_states = Arc::clone(&states);
        let keeper = std::thread::Builder::new()
            .name("control-plane-keeper".into())
            .spawn(move || keep(inbox, keeper_states))?;
        Ok(Self {
            commands,
            keeper: Some(keeper),
            states,
        })
    }

    /// Starts a child; returns its pid.
    pub fn spawn(&self, spec: ProcessSpec) -> io::Result<u32> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(Command_::Spawn(spec, reply))
            .map_err(|_| io::Error::other("the control-plane keeper thread has stopped"))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the control-plane keeper thread has stopped"))?
    }

    /// Stops the running child named `name` (SIGTERM, then SIGKILL after the grace period) and
    /// starts it again with the same arguments; returns the new pid.
    pub fn restart(&self, name: &'static str) -> io::Result<u32> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(Command_::Restart(name, reply))
            .map_err(|_| io::Error::other("the control-plane keeper thread has stopped"))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the control-plane keeper thread has stopped"))?
    }

    /// Every child started so far, with its exit status once it has exited.
    pub fn states(&self) -> Vec<ProcessState> {
        match self.states.lock() {
            Ok(states) => states.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The first child that exited on its own, if any.
    pub fn first_exited(&self) -> Option<ProcessState> {
        self.states().into_iter().find(|s| s.exit.is_some())
    }

    /// The error for the first process that has exited, if any, with the tail of its log
    /// (`<name>.log` in `log_dir`): the control plane's and the node's processes alike.
    pub fn exit_error(&self, log_dir: &std::path::Path) -> Option<crate::ControlPlaneError> {
        let state = self.first_exited()?;
        Some(crate::ControlPlaneError::Exited {
            name: state.name,
            status: state
                .exit
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown status".into()),
            log_tail: crate::log_tail(&log_dir.join(format!("{}.log", state.name))),
        })
    }

    /// Stops every child (newest first) and waits for them. Idempotent.
    pub fn stop(&mut self) {
        let _ = self.commands.send(Command_::Stop);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn keep(inbox: mpsc::Receiver<Command_>, states: Arc<Mutex<Vec<ProcessState>>>) {
    let mut children: Vec<(Child, ProcessSpec)> = Vec::new();
    loop {
        match inbox.recv_timeout(POLL) {
            Ok(Command_::Spawn(spec, reply)) => {
                let _ = reply.send(spawn_child(spec, &mut children, &states));
            }
            Ok(Command_::Restart(name, reply)) => {
                let running = children.iter_mut().rposition(|(child, spec)| {
                    spec.name == name && !matches!(child.try_wait(), Ok(Some(_)))
                });
                let restarted = match running {
                    None => Err(io::Error::other(format!("{name} is not running"))),
                    Some(index) => {
                        let (mut old, spec) = children.remove(index);
                        terminate(&mut old);
                        // The new child takes the old one's place among the states.
                        update(&states, |all| all.retain(|s| s.pid != old.id()));
                        spawn_child(spec, &mut children, &states)
                    }
                };
                let _ = reply.send(restarted);
            }
            Ok(Command_::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        for (child, _) in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                record_exit(&states, child.id(), status);
            }
        }
    }
    // Newest first: the API server goes before the etcd it depends on.
    for (child, _) in children.iter_mut().rev() {
        let status = terminate(child);
        if let Some(status) = status {
            record_exit(&states, child.id(), status);
        }
    }
}

fn spawn_child(
    spec: ProcessSpec,
    children: &mut Vec<(Child, ProcessSpec)>,
    states: &Mutex<Vec<ProcessState>>,
) -> io::Result<u32> {
    let child = start(&spec)?;
    let pid = child.id();
    update(states, |s| {
        s.push(ProcessState {
            name: spec.name,
            pid,
            exit: None,
        })
    });
    children.push((child, spec));
    Ok(pid)
}

fn start(spec: &ProcessSpec) -> io::Result<Child> {
    // Appended, so a restarted child's log follows its predecessor's.
    let log = File::options().create(true).append(true).open(&spec.log)?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "could not start {} ({}): {e}",
                spec.name,
                spec.program.display()
            ),
        )
    })
}

/// SIGTERM, wait up to the grace period, then SIGKILL; always reaps the child.
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain syscall on a pid we own and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    child.wait().ok()
}

fn record_exit(states: &Mutex<Vec<ProcessState>>, pid: u32, status: ExitStatus) {
    update(states, |all| {
        if let Some(state) = all.iter_mut().find(|s| s.pid == pid) {
            state.exit.get_or_insert(status);
        }
    });
}

fn update(states: &Mutex<Vec<ProcessState>>, f: impl FnOnce(&mut Vec<ProcessState>)) {
    match states.lock() {
        Ok(mut guard) => f(&mut guard),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}
