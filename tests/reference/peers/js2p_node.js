/*
 * Run one js2p (the reference JavaScript implementation) mesh node under JSON-line control.
 *
 * This is a child process of tests/reference, which runs it with NODE_PATH pointing at
 * the node_modules folder where js2p, node-forge and nodejs-websocket are installed.
 *
 * Usage: node js2p_node.js --host 127.0.0.1 --port 0 --subnet mesh --encryption Plaintext|SSL|ws
 *
 * The line protocol is the one of py2p_node.py: commands connect, send, reply, peers, stop
 * on stdin; events ready, message, result, error on stdout. Packets are JSON where
 * {"hex": "..."} is a byte string (Buffer) and {"map": [[k, v], ...]} a msgpack map.
 * The process exits after "stop" or when its stdin closes.
 */
"use strict";

const net = require('net');
const readline = require('readline');
const util = require('util');

// js2p logs with console.log: keep stdout for the JSON lines only.
const toStderr = (...args) => { process.stderr.write(util.format(...args) + '\n'); };
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;

const js2p = require('js2p');

const KEEP_MESSAGES = 1000;

function parseArgs(argv) {
    const args = {host: '127.0.0.1', port: 0, subnet: 'mesh', encryption: 'Plaintext'};
    for (let i = 0; i < argv.length; i += 2) {
        const name = argv[i].replace(/^--/, '');
        if (!(name in args) || i + 1 >= argv.length) {
            throw new Error(`bad argument ${argv[i]}`);
        }
        args[name] = name === 'port' ? Number(argv[i + 1]) : argv[i + 1];
    }
    if (!['Plaintext', 'SSL', 'ws'].includes(args.encryption)) {
        throw new Error(`unsupported encryption ${args.encryption} (js2p listens on Plaintext, SSL, ws)`);
    }
    return args;
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function toJson(value) {
    if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
        return {hex: Buffer.from(value).toString('hex')};
    }
    if (Array.isArray(value)) {
        return value.map(toJson);
    }
    if (value instanceof Map) {
        return {map: [...value.entries()].map(([k, v]) => [toJson(k), toJson(v)])};
    }
    if (value === undefined) {
        return null;
    }
    if (value !== null && typeof value === 'object') {
        if (Object.getPrototypeOf(value) === Object.prototype) {
            return {map: Object.entries(value).map(([k, v]) => [k, toJson(v)])};
        }
        return value.toString();  // e.g. a big-integer
    }
    return value;
}

function fromJson(value) {
    if (Array.isArray(value)) {
        return value.map(fromJson);
    }
    if (value !== null && typeof value === 'object') {
        if ('hex' in value) {
            return Buffer.from(value.hex, 'hex');
        }
        if ('map' in value) {
            const obj = {};
            for (const [k, v] of value.map) {
                obj[String(fromJson(k))] = fromJson(v);
            }
            return obj;
        }
        throw new Error(`untagged JSON object in packets: ${JSON.stringify(value)}`);
    }
    return value;
}

function ident(value) {
    return value === null || value === undefined ? null : value.toString();
}

function freePort(host) {
    return new Promise((resolve, reject) => {
        const probe = net.createServer();
        probe.once('error', reject);
        probe.listen(0, host, () => {
            const port = probe.address().port;
            probe.close(() => resolve(port));
        });
    });
}

function listen(host, port, protocol) {
    return new Promise((resolve, reject) => {
        const sock = new js2p.mesh.MeshSocket(host, port, protocol);
        sock.incoming.once('listening', () => {
            sock.incoming.removeListener('error', reject);
            sock.incoming.on('error', (err) => console.log(`listener error: ${err}`));
            resolve(sock);
        });
        sock.incoming.once('error', (err) => {
            try { sock.close(); } catch (e) { /* not listening */ }
            reject(err);
        });
    });
}

async function makeSocket(host, port, protocol) {
    if (port) {
        return listen(host, port, protocol);
    }
    for (let attempt = 0; ; attempt++) {
        try {
            return await listen(host, await freePort(host), protocol);
        }
        catch (err) {
            if (err.code !== 'EADDRINUSE' || attempt >= 50) {
                throw err;
            }
        }
    }
}

/* Resolve once the connection js2p just opened is up (true), or reject on failure. */
function dialled(handler) {
    return new Promise((resolve, reject) => {
        const raw = handler.sock;
        const ok = () => resolve(true);
        raw.once(raw.encrypted ? 'secureConnect' : 'connect', ok);
        // js2p's own error listener closes the socket: hear the cause before it does.
        raw.prependOnceListener('error', (err) => reject(err || new Error('connection failed')));
        raw.once('close', () => reject(new Error('connection closed before it was up')));
    });
}

class Node {
    constructor(sock) {
        this.sock = sock;
        this.messages = new Map();
        this.last = null;
        sock.on('message', () => this.drain());
    }

    drain() {
        for (let msg = this.sock.recv(); msg !== undefined; msg = this.sock.recv()) {
            const id = Buffer.from(msg.id).toString('hex');
            this.messages.delete(id);
            this.messages.set(id, msg);
            this.last = msg;
            if (this.messages.size > KEEP_MESSAGES) {
                this.messages.delete(this.messages.keys().next().value);
            }
            emit({event: 'message', packets: toJson(msg.packets), sender: toJson(msg.sender), id: id});
        }
    }

    async handle(cmd) {
        switch (cmd.cmd) {
        case 'connect': {
            const before = new Set(this.sock.awaiting_ids);
            const declined = this.sock.connect(cmd.host, Number(cmd.port));
            const handler = this.sock.awaiting_ids.find((h) => !before.has(h));
            if (declined !== undefined || handler === undefined) {
                return false;
            }
            return dialled(handler);
        }
        case 'send':
            if (cmd.whisper) {
                const whisper = js2p.base.flags.whisper;
                this.sock.send(fromJson(cmd.packets), whisper, whisper);
            } else {
                this.sock.send(fromJson(cmd.packets));
            }
            return null;
        case 'reply': {
            const msg = cmd.to ? this.messages.get(cmd.to) : this.last;
            if (!msg) {
                throw new Error(`no received message to reply to (to=${cmd.to})`);
            }
            msg.reply(fromJson(cmd.packets));
            return null;
        }
        case 'peers':
            return toJson([...this.sock.routing_table.keys()]);
        case 'stop':
            this.sock.close();
            return null;
        default:
            throw new Error(`unknown command ${cmd.cmd}`);
        }
    }
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const protocol = new js2p.base.Protocol(args.subnet, args.encryption);
    const node = new Node(await makeSocket(args.host, args.port, protocol));
    emit({event: 'ready', port: node.sock.addr[1], id: ident(node.sock.id)});

    // Commands run one after the other, in the order they came.
    let chain = Promise.resolve();
    const lines = readline.createInterface({input: process.stdin, terminal: false});
    lines.on('line', (line) => {
        if (!line.trim()) {
            return;
        }
        const cmd = JSON.parse(line);
        chain = chain.then(async () => {
            try {
                emit({event: 'result', seq: cmd.seq, value: await node.handle(cmd)});
            }
            catch (err) {
                console.log(err && err.stack ? err.stack : err);
                emit({event: 'error', seq: cmd.seq, error: String(err && err.message ? err.message : err)});
            }
            if (cmd.cmd === 'stop') {
                process.exit(0);
            }
        });
    });
    lines.on('close', () => {
        chain.then(() => {
            try { node.sock.close(); } catch (e) { console.log(e); }
            process.exit(0);
        });
    });
}

process.on('uncaughtException', (err) => {
    console.log(`uncaught exception: ${err && err.stack ? err.stack : err}`);
});

main().catch((err) => {
    console.log(`js2p node failed to start: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
});
