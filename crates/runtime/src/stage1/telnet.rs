//! The host's side of telnet (RFC 854, 1073) on a stage1-kvm pod's terminal sessions: busybox
//! `telnetd -i` in the guest gives a command (`kubectl exec -t`) or a `tty: true` container a
//! pseudo-terminal on a channel connection, and the host speaks just enough telnet: it drops the
//! option negotiation from the output, doubles 0xFF in the input and sends window sizes as NAWS.

/// What the host discards a `tty` session's output up to (telnetd's greeting, the echo of
/// nothing typed yet): the marker line `kvm`'s `RK_TTY` prints before it runs
/// the command.
const TTY_MARKER: &[u8] = b"RKTUP-TTY\r\n";

/// The host's side of telnet on a `tty` session (RFC 854, 1073): enough to talk to busybox
/// telnetd, which only offers options and reads window sizes.
pub struct Telnet {
    state: TelnetState,
    /// Output seen before [`TTY_MARKER`] (discarded once it is found).
    head: Option<Vec<u8>>,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum TelnetState {
    #[default]
    Data,
    Iac,
    /// After WILL/WONT/DO/DONT: the option byte.
    Opt,
    Sub,
    SubIac,
}

const IAC: u8 = 255;

impl Default for Telnet {
    fn default() -> Telnet {
        Telnet::new()
    }
}

impl Telnet {
    pub fn new() -> Telnet {
        Telnet {
            state: TelnetState::Data,
            head: Some(Vec::new()),
        }
    }

    /// The terminal output in `data` (commands removed; nothing before the marker).
    pub fn output(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for &b in data {
            self.state = match (self.state, b) {
                (TelnetState::Data, IAC) => TelnetState::Iac,
                (TelnetState::Data, _) => {
                    out.push(b);
                    TelnetState::Data
                }
                (TelnetState::Iac, IAC) => {
                    out.push(IAC);
                    TelnetState::Data
                }
                (TelnetState::Iac, 251..=254) => TelnetState::Opt,
                (TelnetState::Iac, 250) => TelnetState::Sub,
                (TelnetState::Iac, _) | (TelnetState::Opt, _) => TelnetState::Data,
                (TelnetState::Sub, IAC) => TelnetState::SubIac,
                (TelnetState::Sub, _) => TelnetState::Sub,
                (TelnetState::SubIac, 240) => TelnetState::Data,
                (TelnetState::SubIac, _) => TelnetState::Sub,
            };
        }
        let Some(head) = &mut self.head else {
            return out;
        };
        head.extend_from_slice(&out);
        match head.windows(TTY_MARKER.len()).position(|w| w == TTY_MARKER) {
            Some(at) => {
                let rest = head.split_off(at + TTY_MARKER.len());
                self.head = None;
                rest
            }
            // Not a greeting any more: whatever this is, the user should see it.
            None if head.len() > 64 * 1024 => self.head.take().unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Terminal input as telnet data (0xFF doubled).
    pub fn input(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for &b in data {
            out.push(b);
            if b == IAC {
                out.push(IAC);
            }
        }
        out
    }

    /// A window size (NAWS subnegotiation).
    pub fn window_size(cols: u16, rows: u16) -> Vec<u8> {
        let mut out = vec![IAC, 250, 31];
        out.extend(Self::input(&cols.to_be_bytes()));
        out.extend(Self::input(&rows.to_be_bytes()));
        out.extend([IAC, 240]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telnet_output_drops_negotiation_and_the_greeting() {
        let mut t = Telnet::new();
        let mut got = t.output(&[255, 253, 1, 255, 253, 31, 255, 251, 3, b'\r', b'\r', b'\n']);
        got.extend(t.output(b"RKTUP-TT"));
        assert!(got.is_empty(), "{got:?}");
        got.extend(t.output(b"Y\r\nhello \xff\xff!\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0 you"));
        assert_eq!(got, b"hello \xff! you");
        assert_eq!(Telnet::input(b"a\xffb"), b"a\xff\xffb");
        assert_eq!(
            Telnet::window_size(255, 24),
            [255, 250, 31, 0, 255, 255, 0, 24, 255, 240]
        );
    }
}
