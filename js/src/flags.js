// The protocol's flags (PROTOCOL.md, "Flags").

/** Main flags (msg_type) and sub-flags (packets[0]), by name. */
export const flags = Object.freeze({
  // main flags
  broadcast: 0x00,
  renegotiate: 0x01,
  whisper: 0x02,
  ping: 0x03,
  pong: 0x04,
  // sub-flags (broadcast, renegotiate, whisper, ping and pong as above)
  compression: 0x01,
  handshake: 0x05,
  notify: 0x06,
  peers: 0x07,
  request: 0x08,
  resend: 0x09,
  response: 0x0a,
  store: 0x0b,
  retrieve: 0x0c,
  retrieved: 0x0d,
  forward: 0x0e,
  new_paths: 0x0f,
  revoke_paths: 0x10,
  delta: 0x11,
});
