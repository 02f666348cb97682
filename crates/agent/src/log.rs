//! The agent's log lines on stderr: `<RFC 3339 time, ns> agent: <message>`. Every module logs
//! through `log`; nothing else is printed by the agent.

pub fn log(msg: &str) {
    eprintln!("{:.9} agent: {msg}", jiff::Timestamp::now());
}
