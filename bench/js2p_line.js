/*
 * The line benchmark for js2p (the reference JavaScript node): A - B - C,
 * A broadcasts, B relays, C counts.  The counterpart of bench/line.py.
 *
 * Run with NODE_PATH pointing at the node_modules folder where js2p is
 * installed (tests/.js2p/node_modules, see tests/reference.py).
 *
 *   node bench/js2p_line.js inproc --size 100 --count 2000 --runs 3 --warmup 200
 *       three MeshSockets in this process; A keeps a window of messages in
 *       flight and refills it as C counts them.  Prints one JSON line.
 *   node bench/js2p_line.js role --role sink|relay|source --connect PORT ...
 *       one node of a process-per-node line, speaking the JSON lines of
 *       bench/line.py's role mode: {"ready": port}, then {"t0": s} from the
 *       source and {"done": {"delivered": n, "last": s}} from the sink, with
 *       times in seconds of CLOCK_MONOTONIC (as Python's time.monotonic()).
 */
"use strict";

const crypto = require('crypto');
const net = require('net');
const util = require('util');

// js2p logs with console.log: keep stdout for the JSON lines only.
const toStderr = (...args) => { process.stderr.write(util.format(...args) + '\n'); };
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;

const js2p = require('js2p');

// The line stays a line: no node dials the peers it hears of.
js2p.mesh.max_outgoing = 0;

const STALL_SECONDS = 10;

function parseArgs(argv) {
    const args = {mode: argv[0], role: null, connect: 0, size: 100, count: 2000, warmup: 200, runs: 3, window: 0};
    for (let i = 1; i < argv.length; i += 2) {
        const name = argv[i].replace(/^--/, '');
        if (!(name in args) || i + 1 >= argv.length) {
            throw new Error(`bad argument ${argv[i]}`);
        }
        args[name] = name === 'role' ? argv[i + 1] : Number(argv[i + 1]);
    }
    return args;
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function monotonic() {
    return Number(process.hrtime.bigint()) / 1e9;
}

function windowFor(size) {
    return Math.max(4, Math.min(1000, Math.floor(1024 * 1024 / Math.max(size, 1))));
}

/* The payload of message `index` of run `run`: unique, `size` bytes, the run first. */
function payload(size, run, index, filler) {
    const out = Buffer.alloc(Math.max(size, 8));
    out[0] = run & 0xFF;
    out.writeUIntBE(index, 2, 6);
    filler.copy(out, 8, 0, Math.max(0, size - 8));
    return out.subarray(0, size);
}

function freePort() {
    return new Promise((resolve, reject) => {
        const probe = net.createServer();
        probe.once('error', reject);
        probe.listen(0, '127.0.0.1', () => {
            const port = probe.address().port;
            probe.close(() => resolve(port));
        });
    });
}

/* A MeshSocket on a free port.  (js2p makes its ID from its address: three
 * sockets made on port 0 in one process would share one ID.) */
async function listen() {
    for (let attempt = 0; ; attempt++) {
        const port = await freePort();
        try {
            return await new Promise((resolve, reject) => {
                const sock = new js2p.mesh.MeshSocket('127.0.0.1', port);
                sock.incoming.once('listening', () => resolve(sock));
                sock.incoming.once('error', reject);
            });
        }
        catch (err) {
            if (err.code !== 'EADDRINUSE' || attempt >= 20) {
                throw err;
            }
        }
    }
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

async function connected(sock, peers) {
    while (sock.routing_table.size < peers) {
        await sleep(10);
    }
}

/* Count broadcasts of the current run at `sock`, calling `arrived` for each. */
function countAt(sock, runOf, arrived) {
    sock.register_handler((msg, conn) => {
        const packets = msg.packets;
        if (packets[0] === js2p.base.flags.broadcast && packets[1] && packets[1][0] === runOf()) {
            arrived();
            return true;
        }
        return false;
    });
}

async function inproc(args) {
    const [a, b, c] = [await listen(), await listen(), await listen()];
    b.connect('127.0.0.1', a.addr[1]);
    c.connect('127.0.0.1', b.addr[1]);
    await connected(a, 1);
    await connected(b, 2);
    await connected(c, 1);
    const filler = crypto.randomBytes(Math.max(args.size, 8));
    const window = args.window || windowFor(args.size);
    let run = 0;
    let flow = null;
    countAt(c, () => run, () => flow.arrival());
    const results = [];
    for (run = 0; run <= args.runs; run++) {
        const total = run === 0 ? args.warmup : args.count;
        flow = new Flow(total, window, (index) => a.send([payload(args.size, run, index, filler)]));
        const result = await flow.start();
        if (run > 0) {
            results.push(result);
        }
        await sleep(50);
    }
    results.sort((x, y) => x.rate - y.rate);
    const middle = Object.assign({}, results[Math.floor(results.length / 2)]);
    middle.rates = results.map((r) => Math.round(r.rate * 10) / 10);
    middle.delivery = Math.min(...results.map((r) => r.delivered / r.sent));
    emit(Object.assign({impl: 'js2p', size: args.size, window: window}, middle));
    for (const sock of [a, b, c]) {
        try { sock.close(); } catch (e) { /* closing */ }
    }
    process.exit(0);
}

class Flow {
    constructor(total, window, send) {
        this.total = total;
        this.window = window;
        this.send = send;
        this.sent = 0;
        this.arrived = 0;
        this.refilling = false;
    }

    start() {
        return new Promise((resolve) => {
            this.resolve = resolve;
            this.first = this.last = this.progress = monotonic();
            this.watchdog = setInterval(() => this.check(), 1000);
            this.refill();
        });
    }

    arrival() {
        this.arrived += 1;
        this.last = this.progress = monotonic();
        if (this.arrived >= this.total) {
            this.finish();
        }
        else if (!this.refilling && this.sent < this.total && this.sent - this.arrived <= this.window / 2) {
            this.refilling = true;
            setImmediate(() => this.refill());
        }
    }

    refill() {
        this.refilling = false;
        const limit = Math.min(this.total, this.arrived + this.window);
        while (this.sent < limit) {
            this.send(this.sent);
            this.sent += 1;
        }
    }

    check() {
        if (monotonic() - this.progress > STALL_SECONDS) {
            this.finish();
        }
    }

    finish() {
        if (!this.resolve) {
            return;
        }
        clearInterval(this.watchdog);
        const seconds = Math.max(this.last - this.first, 1e-9);
        const resolve = this.resolve;
        this.resolve = null;
        resolve({sent: this.total, delivered: this.arrived, seconds: seconds, rate: this.arrived / seconds});
    }
}

async function role(args) {
    const sock = await listen();
    if (args.role === 'sink') {
        let count = 0;
        let last = 0;
        countAt(sock, () => 1, () => {
            count += 1;
            last = monotonic();
            if (count >= args.count) {
                emit({done: {delivered: count, last: last}});
                process.exit(0);
            }
        });
        setInterval(() => {
            if (count && monotonic() - last > STALL_SECONDS) {
                emit({done: {delivered: count, last: last}});
                process.exit(0);
            }
        }, 1000);
        emit({ready: sock.addr[1]});
        return;
    }
    sock.connect('127.0.0.1', args.connect);
    await connected(sock, 1);
    if (args.role === 'relay') {
        emit({ready: sock.addr[1]});
        return;
    }
    emit({ready: 0});
    const link = sock.routing_table.values().next().value.sock;
    const filler = crypto.randomBytes(Math.max(args.size, 8));
    const burst = async (run, total) => {
        for (let sent = 0; sent < total; sent++) {
            sock.send([payload(args.size, run, sent, filler)]);
            if (link.writableLength > 65536) {
                await new Promise((resolve) => link.once('drain', resolve));
            }
        }
    };
    await burst(0, args.warmup);
    await sleep(1000);
    const t0 = monotonic();
    await burst(1, args.count);
    emit({t0: t0});
}

const args = parseArgs(process.argv.slice(2));
(args.mode === 'inproc' ? inproc(args) : role(args)).catch((err) => {
    console.log(err && err.stack ? err.stack : err);
    process.exit(1);
});
