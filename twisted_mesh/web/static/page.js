// The live mesh page: a browser mesh node (twisted_mesh.js) connected to the
// node that serves the page, its peers as a graph (from /status, once a
// second), the message rate, and a chat that broadcasts to the whole mesh.
//
// Everything that comes from the mesh is shown as text (textContent), never
// as HTML.  window.meshPage exposes the node to scripts and tests.
(() => {
  "use strict";

  const POLL_MS = 1000;
  const SAMPLES = 60;
  const AVERAGE = 5; // seconds the rate shown is averaged over
  const MAX_MESSAGES = 200;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const page = {
    sock: null,
    failure: null, // why this browser cannot join the node's network (a signed one)
    status: null, // the node's last /status
    statusError: null, // why the last /status failed
    samples: new Array(60).fill(0), // frames in per second, newest last
    outSamples: [], // messages out per second, the last few
    last: null, // {time, frames_in, frames_out, peers: {id: [in, out]}}
    nodes: new Map(), // peer ID -> {group, edge}
    chat: 0, // chat lines shown
  };
  window.meshPage = page;

  // -- small helpers ------------------------------------------------------------

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const short = (id) => (id ? id.slice(0, 10) : "?");

  function hue(id) {
    let h = 0;
    for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
    return h % 360;
  }

  function hexOf(bytes) {
    const shown = Array.from(bytes.slice(0, 24), (b) => b.toString(16).padStart(2, "0")).join("");
    return "0x" + shown + (bytes.length > 24 ? "…" : "");
  }

  /** A packet as text: strings as they are, bytes as hex, the rest as JSON. */
  function describe(packet) {
    if (typeof packet === "string") return packet;
    if (packet instanceof Uint8Array) return hexOf(packet);
    try {
      return JSON.stringify(packet, (key, value) => (value instanceof Uint8Array ? hexOf(value) : value));
    } catch {
      return String(packet);
    }
  }

  function formatCount(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(n);
  }

  function formatUptime(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  function el(tag, attrs = {}, ...children) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // -- who is who -----------------------------------------------------------------

  /** A peer of the node, as the graph and the chat name it. */
  function kindOf(peer) {
    const sock = page.sock;
    if (sock && peer.id === sock.id) return { key: "you", label: "you" };
    if (peer.transport === "ws" || peer.transport === "wss") {
      return peer.address ? { key: "ws", label: "websocket" } : { key: "browser", label: "browser" };
    }
    if (peer.transport === "SSL") return { key: "tls", label: "tls" };
    return { key: "tcp", label: "tcp" };
  }

  function senderKind(sender) {
    if (page.sock && sender === page.sock.id) return "you";
    if (page.status) {
      if (sender === page.status.id) return "this node";
      const peer = page.status.peers.find((p) => p.id === sender);
      if (peer) return kindOf(peer).label;
    }
    return "mesh";
  }

  // -- the connection pill ----------------------------------------------------------

  function renderConnection() {
    const pill = $("status");
    const retry = $("retry");
    const sock = page.sock;
    // The pill's words: what, and a detail that narrow screens leave out.
    let state = "starting";
    let words = ["Starting…", ""];
    let canRetry = false;
    if (page.failure) {
      state = "error";
      words = ["Cannot join", ": this network is signed, and this browser lacks WebCrypto Ed25519"];
    } else if (!sock) {
      if (page.statusError) {
        state = "connecting";
        words = ["Cannot reach the node", ": trying again…"];
      }
    } else {
      const link = sock.links()[0];
      if (sock.closed) {
        state = "closed";
        words = ["Closed", ""];
      } else if (!link) {
        state = "connecting";
        words = ["Connecting…", ""];
      } else if (link.state === "connected") {
        state = "connected";
        words = ["Connected", ` to node ${short(link.peer_id)}`];
      } else if (link.state === "connecting") {
        state = "connecting";
        words = link.attempt ? ["Reconnecting…", ` (attempt ${link.attempt + 1})`] : ["Connecting…", ""];
      } else if (link.state === "waiting") {
        state = "connecting";
        const seconds = Math.max(0, Math.ceil((link.retryAt - Date.now()) / 1000));
        words = ["Node unreachable", ` · retrying in ${seconds} s`];
        canRetry = true;
      } else {
        state = "error";
        words = [link.lastError || "Disconnected", ""];
      }
    }
    if (pill.dataset.state !== state) pill.dataset.state = state;
    const center = $("center");
    if (center) center.classList.toggle("down", state !== "connected" || !!page.statusError);
    if ($("status-main").textContent !== words[0]) $("status-main").textContent = words[0];
    if ($("status-detail").textContent !== words[1]) $("status-detail").textContent = words[1];
    retry.hidden = !canRetry;
    $("chat-send").disabled = state !== "connected";
  }

  // -- chat -------------------------------------------------------------------------

  function scrollToEnd(list, wasAtEnd) {
    if (wasAtEnd) list.scrollTop = list.scrollHeight;
  }

  function append(item) {
    const list = $("messages");
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    while (list.children.length > MAX_MESSAGES) list.firstElementChild.remove();
    scrollToEnd(list, atEnd);
  }

  function systemLine(words, tone = "") {
    append(el("li", { class: `system ${tone}`.trim() }, el("span", { text: words })));
  }

  function chatLine({ sender, packets, time, id, whisper, mine }) {
    const color = `hsl(${hue(sender)} 70% 65%)`;
    const avatar = el("div", { class: "avatar", text: sender.slice(0, 2) });
    avatar.style.background = color;
    const kind = mine ? "you" : senderKind(sender);
    const kindTag = el("span", { class: "kind", text: whisper ? `${kind} · whisper` : kind });
    const when = new Date(time * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    const meta = el(
      "div",
      { class: "meta" },
      el("span", { class: "who mono", text: short(sender), title: sender }),
      kindTag,
      el("time", { text: when }),
    );
    const text = el("div", { class: "text", text: packets.map(describe).join("  ·  ") });
    const item = el("li", { class: mine ? "mine" : "", "data-sender": sender, "data-id": id || "" }, avatar, el("div", { class: "bubble" }, meta, text));
    if (kind === "mesh") {
      // Not a peer of the node, or one it told us of yet: look again later.
      kindTag.dataset.pending = whisper ? "whisper" : "";
    }
    page.chat += 1;
    append(item);
  }

  /** Name the senders the node did not know when their messages came. */
  function resolveKinds() {
    for (const tag of document.querySelectorAll("#messages .kind[data-pending]")) {
      const kind = senderKind(tag.closest("li").dataset.sender);
      if (kind === "mesh") continue;
      tag.textContent = tag.dataset.pending ? `${kind} · ${tag.dataset.pending}` : kind;
      delete tag.dataset.pending;
    }
  }

  function drain(sock) {
    for (let msg = sock.recv(); msg; msg = sock.recv()) {
      chatLine({
        sender: msg.sender,
        packets: msg.packets.slice(1),
        time: msg.time,
        id: msg.id,
        whisper: msg.msg_type === twisted_mesh.flags.whisper,
        mine: false,
      });
    }
  }

  async function sendChat(event) {
    event.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || !page.sock) return;
    try {
      const id = await page.sock.send([text]);
      input.value = "";
      chatLine({ sender: page.sock.id, packets: [text], time: Math.floor(Date.now() / 1000), id, mine: true });
    } catch (error) {
      systemLine(`Not sent: ${error.message}`, "bad");
    }
  }

  // -- the graph --------------------------------------------------------------------

  function place(index, count) {
    if (count === 1) return [0, -140];
    const angle = -Math.PI / 2 + (2 * Math.PI * index) / count;
    const rx = count > 8 ? 250 : 220;
    return [Math.round(rx * Math.cos(angle)), Math.round(140 * Math.sin(angle))];
  }

  function centerNode() {
    let center = $("center");
    if (!center) {
      center = el(
        "svg:g",
        { id: "center", class: "center" },
        el("svg:circle", { class: "ring", r: 34 }),
        el("svg:circle", { class: "core", r: 11 }),
        el("svg:text", { y: 54, text: "this node" }),
        el("svg:text", { class: "sub", y: 69, text: "" }),
      );
      $("nodes").append(center);
    }
    return center;
  }

  function peerNode(peer) {
    const group = el(
      "svg:g",
      { class: "peer" },
      el("svg:title", {}),
      el("svg:circle", { class: "halo", r: 27 }),
      el("svg:circle", { class: "ring", r: 20 }),
      el("svg:circle", { class: "core", r: 7 }),
      el("svg:text", { y: 36 }),
      el("svg:text", { class: "sub", y: 50 }),
    );
    const edge = el("svg:line", { class: "edge", x1: 0, y1: 0 });
    $("edges").append(edge);
    $("nodes").append(group);
    return { group, edge, x: 0, y: 0 };
  }

  function pulse(from, to, outward) {
    if (document.hidden || !from || !to) return;
    const dot = el("svg:circle", { class: outward ? "pulse out" : "pulse", r: 4 });
    $("pulses").append(dot);
    const animation = dot.animate(
      [{ transform: `translate(${from[0]}px, ${from[1]}px)` }, { transform: `translate(${to[0]}px, ${to[1]}px)` }],
      { duration: 700, easing: "ease-in-out" },
    );
    animation.onfinish = () => dot.remove();
  }

  function renderGraph(status, previous) {
    const center = centerNode();
    $("graph-empty").hidden = true;
    if (!status) return;
    center.querySelector("text.sub").textContent = short(status.id);
    const peers = [...status.peers].sort((a, b) => {
      const ka = kindOf(a).key;
      const kb = kindOf(b).key;
      return ka === kb ? (a.id < b.id ? -1 : 1) : ka < kb ? -1 : 1;
    });
    const seen = new Set();
    peers.forEach((peer, index) => {
      seen.add(peer.id);
      let entry = page.nodes.get(peer.id);
      if (!entry) {
        entry = peerNode(peer);
        page.nodes.set(peer.id, entry);
      }
      const [x, y] = place(index, peers.length);
      const kind = kindOf(peer);
      entry.x = x;
      entry.y = y;
      entry.group.setAttribute("class", `peer k-${kind.key}`);
      entry.group.setAttribute("transform", `translate(${x} ${y})`);
      entry.edge.setAttribute("x2", x);
      entry.edge.setAttribute("y2", y);
      const [title, , , , label, sub] = entry.group.children;
      title.textContent = `${peer.id}\n${peer.transport}${peer.address ? " · " + peer.address.join(":") : " · cannot be dialled"} · IDs as ${peer.ids}`;
      label.textContent = kind.key === "you" ? "you" : short(peer.id);
      sub.textContent = kind.key === "you" ? "this browser" : kind.label;
      const before = previous && previous.peers[peer.id];
      const moved = before ? [peer.frames_in - before[0], peer.frames_out - before[1]] : [0, 0];
      entry.edge.classList.toggle("active", moved[0] + moved[1] > 0);
      if (moved[0] > 0) pulse([x, y], [0, 0], false);
      if (moved[1] > 0) setTimeout(() => pulse([0, 0], [entry.x, entry.y], true), 250);
    });
    for (const [id, entry] of page.nodes) {
      if (!seen.has(id)) {
        entry.group.remove();
        entry.edge.remove();
        page.nodes.delete(id);
      }
    }
  }

  // -- numbers ----------------------------------------------------------------------

  function renderStats(status, previous, now) {
    if (!status) return;
    const kinds = {};
    for (const peer of status.peers) {
      const label = kindOf(peer).key === "you" ? "browser" : kindOf(peer).label;
      kinds[label] = (kinds[label] || 0) + 1;
    }
    $("peers").textContent = status.peers.length;
    $("peers-split").textContent = Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(" · ") || "no peers yet";
    $("peer-summary").textContent = status.peers.length === 1 ? "1 peer" : `${status.peers.length} peers`;
    $("relayed").textContent = formatCount(status.relayed);
    $("delivered").textContent = `${formatCount(status.delivered)} delivered · ${formatCount(status.frames_in)} frames in`;
    $("uptime").textContent = formatUptime(status.uptime);
    const signed = status.protocol.signed ? " · signed" : "";
    $("transport").textContent = `${status.protocol.encryption}${status.out_addrs.ws ? " + ws" : ""} · ${status.protocol.subnet}${signed}`;
    if (previous && now > previous.time) {
      const seconds = (now - previous.time) / 1000;
      const rateIn = Math.max(0, status.frames_in - previous.frames_in) / seconds;
      const rateOut = Math.max(0, status.frames_out - previous.frames_out) / seconds;
      page.samples.push(rateIn);
      if (page.samples.length > SAMPLES) page.samples.shift();
      page.outSamples.push(rateOut);
      if (page.outSamples.length > AVERAGE) page.outSamples.shift();
      const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
      const shownIn = mean(page.samples.slice(-AVERAGE));
      const shownOut = mean(page.outSamples);
      $("rate").textContent = shownIn < 10 ? shownIn.toFixed(1) : Math.round(shownIn);
      $("rate-split").textContent = `in ${shownIn.toFixed(1)} · out ${shownOut.toFixed(1)} · last ${AVERAGE} s`;
      renderSpark();
    }
  }

  function renderSpark() {
    const samples = page.samples;
    if (samples.length < 2) return;
    const top = Math.max(1, ...samples) * 1.15;
    const step = 120 / (samples.length - 1);
    const start = 0;
    const points = samples.map((v, i) => `${(start + i * step).toFixed(1)},${(32 - (v / top) * 30).toFixed(1)}`);
    $("spark-line").setAttribute("d", "M" + points.join(" L"));
    $("spark-area").setAttribute("d", `M${start.toFixed(1)},32 L${points.join(" L")} L120,32 Z`);
  }

  // -- the loops --------------------------------------------------------------------

  async function fetchStatus() {
    const response = await fetch("status", { cache: "no-store" });
    if (!response.ok) throw new Error(`status answered ${response.status}`);
    return response.json();
  }

  async function poll() {
    for (;;) {
      const now = Date.now();
      let status = null;
      try {
        status = await fetchStatus();
        page.statusError = null;
      } catch (error) {
        page.statusError = error;
      }
      const previous = page.last && status && page.last.id === status.id ? page.last : null;
      page.status = status || page.status;
      renderGraph(status, previous);
      renderStats(status, previous, now);
      if (status) {
        resolveKinds();
        $("node-id").textContent = status.id;
        $("subnet").textContent = `subnet ${status.protocol.subnet}`;
        page.last = {
          id: status.id,
          time: now,
          frames_in: status.frames_in,
          frames_out: status.frames_out,
          peers: Object.fromEntries(status.peers.map((p) => [p.id, [p.frames_in, p.frames_out]])),
        };
      }
      renderConnection();
      await sleep(POLL_MS);
    }
  }

  async function start() {
    $("chat").addEventListener("submit", sendChat);
    $("retry").addEventListener("click", () => page.sock && page.sock.retryNow());
    setInterval(renderConnection, 250);
    renderConnection();
    // The subnet comes from the node; keep asking until it answers.
    let status = null;
    for (let delay = 500; !status; delay = Math.min(delay * 2, 8000)) {
      try {
        status = await fetchStatus();
      } catch (error) {
        page.statusError = error;
        renderConnection();
        await sleep(delay);
      }
    }
    page.status = status;
    const encryption = location.protocol === "https:" ? "wss" : "ws";
    // A signed network's page node proves a key it keeps in this browser
    // (so a reload keeps its ID): it needs WebCrypto with Ed25519.
    const protocol = new twisted_mesh.Protocol(status.protocol.subnet, encryption, { signed: !!status.protocol.signed });
    const unsupported = (error) => {
      page.failure = error;
      systemLine(error.message, "bad");
      renderConnection();
    };
    let sock;
    try {
      sock = new twisted_mesh.MeshSocket(protocol);
    } catch (error) {
      unsupported(error);
      poll(); // the node's graph still shows
      return;
    }
    page.sock = sock;
    sock.ready.then((id) => ($("my-id").textContent = id), unsupported);
    sock.on("message", drain);
    sock.on("status", renderConnection);
    let everConnected = false;
    sock.on("connect", () => {
      const peer = [...sock.routing_table.keys()][0];
      systemLine(everConnected ? `Reconnected to node ${short(peer)}` : `Joined the mesh through node ${short(peer)}`, "good");
      everConnected = true;
    });
    sock.on("disconnect", () => systemLine("Lost the node: reconnecting…", "bad"));
    sock.on("error", (s, error) => systemLine(error.message, "bad"));
    // The mesh answers where the page is served: "/", or a reverse proxy's
    // path prefix ("/mesh/").
    page.ready = sock.connect(`${encryption}://${location.host}${new URL(".", location.href).pathname}`);
    page.ready.catch(() => {}); // the socket keeps trying; the pill tells
    poll();
  }

  start();
})();
