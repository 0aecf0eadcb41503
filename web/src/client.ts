// The browser client: a relay connection over WebSocket, login bound to the pinned relay key,
// registration, prekeys, bundles, sessions, send / acknowledge / receipts, and the pipelines of
// docs/client.md §5 that a patient chat needs: a persistent queue of outgoing messages, store
// before acknowledge, delivered receipts, reconnect with backoff. Frames, payloads, sessions and
// sealing are all the WebAssembly core's (./wasm); this file only moves bytes and keeps state.

import * as hw from "./wasm";
import { SealedStore } from "./store";

export type MessageState = "queued" | "sent" | "delivered" | "failed";

export interface ChatMessage {
  id: string; // 32 hex digits
  outgoing: boolean;
  text: string;
  sentAtMs: number;
  state?: MessageState;
}

export interface Conversation {
  peer: string; // fingerprint:deviceId
  messages: ChatMessage[];
  agentName?: string; // from a verified agent certificate
}

interface Meta {
  relayKey?: number[]; // pinned at first registration
  relayKeyFingerprint?: string;
  registered: boolean;
  peers: string[];
}

export interface ClientEvents {
  onChange?(peer: string): void;
  onStatus?(text: string, connected: boolean): void;
}

const DEVICE_ID = 1;
const ONE_TIME_PREKEYS = 20;

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function fingerprintOf(address: string): string {
  return address.split(":")[0] ?? "";
}

/** Runs async jobs one at a time, in order (frames, sends and saves never interleave). */
class Serial {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export class HushwireClient {
  private socket?: WebSocket;
  private nextRequest = 2;
  private pending = new Map<number, { resolve(f: hw.Incoming): void; reject(e: Error): void }>();
  private serial = new Serial();
  private backoffMs = 1000;
  private stopped = false;
  private authenticated = false;
  private sessions = new Map<string, hw.Session>();
  readonly conversations = new Map<string, Conversation>();
  relayKeyFingerprint = "";

  private constructor(
    readonly store: SealedStore,
    private account: hw.Account,
    private meta: Meta,
    private relayUrl: string,
    private events: ClientEvents,
  ) {}

  /** Opens the client's state from `store`, creating an account the first time. */
  static async open(
    store: SealedStore,
    relayUrl: string,
    events: ClientEvents = {},
  ): Promise<HushwireClient> {
    const sealedAccount = await store.getBytes("account");
    let account: hw.Account;
    let meta = await store.getJson<Meta>("meta");
    if (sealedAccount && meta) {
      account = hw.Account.unseal(sealedAccount, store.storageKey);
    } else {
      account = new hw.Account(DEVICE_ID, Math.floor(Date.now() / 1000));
      meta = { registered: false, peers: [] };
      await store.put({ account: account.seal(store.storageKey), meta });
    }
    const client = new HushwireClient(store, account, meta, relayUrl, events);
    client.relayKeyFingerprint = meta.relayKeyFingerprint ?? "";
    for (const peer of meta.peers) {
      const sealed = await store.getBytes(`session:${peer}`);
      if (sealed) client.sessions.set(peer, hw.Session.unseal(sealed, store.storageKey));
      const conversation = (await store.getJson<Conversation>(`conversation:${peer}`)) ?? {
        peer,
        messages: [],
      };
      client.conversations.set(peer, conversation);
    }
    return client;
  }

  get address(): string {
    return this.account.address();
  }

  get fingerprint(): string {
    return this.account.fingerprint();
  }

  safetyNumber(peer: string): string | undefined {
    return this.sessions.get(peer)?.safetyNumber();
  }

  /** Adds a conversation with `peer` (saved at once). */
  async addPeer(peer: string): Promise<Conversation> {
    return this.serial.run(async () => {
      let c = this.conversations.get(peer);
      if (!c) {
        c = { peer, messages: [] };
        this.conversations.set(peer, c);
        this.meta.peers.push(peer);
        await this.store.put({ meta: this.meta, [`conversation:${peer}`]: c });
      }
      return c;
    });
  }

  // ------------------------------------------------------------------------------------------
  // Connection
  // ------------------------------------------------------------------------------------------

  /** Connects and keeps reconnecting (1 s doubling to 30 s, with jitter) until `close`. */
  connect(): void {
    this.stopped = false;
    this.open();
  }

  close(): void {
    this.stopped = true;
    this.socket?.close();
    this.socket = undefined;
    for (const s of this.sessions.values()) s.free();
    this.sessions.clear();
    this.account.free();
    this.store.close();
  }

  private status(text: string, connected = false): void {
    this.events.onStatus?.(text, connected);
  }

  private open(): void {
    if (this.stopped) return;
    this.status("Connecting…");
    let socket: WebSocket;
    try {
      socket = new WebSocket(this.relayUrl);
    } catch (e) {
      // Refused before any connection (a content security policy, a malformed URL).
      this.status(`Cannot reach the relay: ${(e as Error).message}`);
      this.retryLater();
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    // A connection that does not open within 10 s (a stalled network, or one the page's
    // content security policy silently blocks) is given up and retried with backoff.
    const stalled = setTimeout(() => {
      if (this.socket === socket && socket.readyState !== WebSocket.OPEN) {
        this.socket = undefined;
        socket.close();
        this.retryLater();
      }
    }, 10_000);
    socket.onopen = () => clearTimeout(stalled);
    this.authenticated = false;
    let first = true;
    socket.onmessage = (event) => {
      if (!(event.data instanceof ArrayBuffer)) return;
      const bytes = new Uint8Array(event.data);
      if (first) {
        first = false;
        void this.serial.run(() => this.login(socket, bytes)).catch((e: Error) => {
          this.status(`Cannot log in: ${e.message}`);
          this.stopped = /key changed/.test(e.message) || this.stopped;
          socket.close();
        });
        return;
      }
      let frame: hw.Incoming;
      try {
        frame = hw.decodeFrame(bytes);
      } catch {
        return;
      }
      const waiter = frame.requestId ? this.pending.get(frame.requestId) : undefined;
      if (waiter) {
        this.pending.delete(frame.requestId);
        waiter.resolve(frame);
      } else if (frame.kind === "deliver") {
        void this.serial.run(() => this.receive(frame));
      }
    };
    socket.onclose = (event) => {
      clearTimeout(stalled);
      if (this.socket !== socket) return;
      this.authenticated = false;
      for (const w of this.pending.values()) w.reject(new Error("the connection closed"));
      this.pending.clear();
      if (event.code === 4001) {
        this.status("This chat was opened elsewhere; this tab no longer receives messages.");
        this.stopped = true;
        return;
      }
      this.retryLater();
    };
  }

  private retryLater(): void {
    if (this.stopped) return;
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
    this.status(`Not connected. Retrying in ${Math.round(delay / 1000)} s…`);
    setTimeout(() => this.open(), delay);
  }

  /** Sends a frame and waits for its answer (or a synthetic Ok-less close). */
  private call(make: (requestId: number) => Uint8Array): Promise<hw.Incoming> {
    const id = this.nextRequest++;
    return this.callWith(id, make(id));
  }

  private callWith(id: number, frame: Uint8Array): Promise<hw.Incoming> {
    return new Promise((resolve, reject) => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      this.pending.set(id, { resolve, reject });
      this.socket.send(frame as Uint8Array<ArrayBuffer>);
    });
  }

  private async login(socket: WebSocket, challenge: Uint8Array): Promise<void> {
    const register = !this.meta.registered;
    const pinned = this.meta.relayKey ? new Uint8Array(this.meta.relayKey) : undefined;
    const seen = hw.decodeFrame(challenge);
    const answer = this.account.answerChallenge(challenge, pinned, register, 1);
    const reply = new Promise<hw.Incoming>((resolve, reject) =>
      this.pending.set(1, { resolve, reject }),
    );
    socket.send(answer as Uint8Array<ArrayBuffer>);
    const result = await reply;
    if (result.kind !== "ok") {
      throw new Error(result.errorName || "the relay closed the connection");
    }
    this.authenticated = true;
    if (register) {
      this.meta.relayKey = Array.from(seen.relayKey);
      this.meta.relayKeyFingerprint = seen.relayKeyFingerprint;
      this.relayKeyFingerprint = seen.relayKeyFingerprint;
      const id = this.nextRequest++;
      const upload = this.account.uploadPrekeysFrame(id, ONE_TIME_PREKEYS, ONE_TIME_PREKEYS);
      // The one-time secrets are stored before the public halves are published.
      await this.store.put({ account: this.account.seal(this.store.storageKey) });
      const answer = await this.callWith(id, upload);
      if (answer.kind !== "ok") throw new Error(`prekey upload refused: ${answer.errorName}`);
      this.meta.registered = true;
      await this.store.put({ meta: this.meta });
    }
    this.backoffMs = 1000;
    this.status("Connected", true);
    // The queue: everything not yet held by the relay goes now, in order.
    void this.serial.run(() => this.flush());
  }

  // ------------------------------------------------------------------------------------------
  // Sending
  // ------------------------------------------------------------------------------------------

  /** Queues a text message: stored first (state "queued"), then sent when connected. */
  async sendText(peer: string, text: string): Promise<ChatMessage> {
    const conversation = await this.addPeer(peer);
    return this.serial.run(async () => {
      const message: ChatMessage = {
        id: toHex(crypto.getRandomValues(new Uint8Array(16))),
        outgoing: true,
        text,
        sentAtMs: Date.now(),
        state: "queued",
      };
      conversation.messages.push(message);
      await this.saveConversation(peer);
      this.events.onChange?.(peer);
      if (this.authenticated) await this.flush();
      return message;
    });
  }

  private async saveConversation(peer: string, extra: Record<string, Uint8Array | object> = {}) {
    const c = this.conversations.get(peer);
    const session = this.sessions.get(peer);
    await this.store.put({
      ...(c ? { [`conversation:${peer}`]: c } : {}),
      ...(session ? { [`session:${peer}`]: session.seal(this.store.storageKey) } : {}),
      ...extra,
    });
  }

  private async sessionFor(peer: string): Promise<hw.Session> {
    let session = this.sessions.get(peer);
    if (session) return session;
    const bundle = await this.call((id) => hw.fetchBundleFrame(id, peer));
    if (bundle.kind !== "bundle") throw new Error(`no bundle for ${peer}: ${bundle.errorName}`);
    session = hw.Session.initiate(this.account, bundle.bundle);
    this.sessions.set(peer, session);
    return session;
  }

  /** Encrypts and sends every queued message, oldest first; runs inside `serial`. */
  private async flush(): Promise<void> {
    for (const c of this.conversations.values()) {
      for (const m of c.messages) {
        if (!this.authenticated || m.state !== "queued") continue;
        const session = await this.sessionFor(c.peer);
        const ciphertext = session.encrypt(hw.encodeTextMessage(fromHex(m.id), m.sentAtMs, m.text));
        // The ratchet state is stored before the ciphertext leaves: no key is used twice.
        await this.saveConversation(c.peer);
        const answer = await this.call((id) => hw.sendFrame(id, c.peer, ciphertext));
        if (answer.kind === "sent") {
          m.state = "sent";
          await this.saveConversation(c.peer);
          this.events.onChange?.(c.peer);
        } else {
          return; // stays queued; retried on the next connection
        }
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Receiving
  // ------------------------------------------------------------------------------------------

  /** One delivery: decrypt, store, and only then acknowledge and send a receipt. */
  private async receive(frame: hw.Incoming): Promise<void> {
    const peer = frame.sender;
    const serverId = frame.serverIds;
    const ciphertext = frame.payload;
    let plaintext: Uint8Array | undefined;
    const existing = this.sessions.get(peer);
    if (existing) {
      try {
        plaintext = existing.decrypt(ciphertext);
      } catch {
        plaintext = undefined;
      }
    }
    let accepted = false;
    if (plaintext === undefined && hw.isPrekeyMessage(ciphertext)) {
      try {
        const a = this.account.accept(ciphertext);
        plaintext = a.plaintext;
        existing?.free();
        this.sessions.set(peer, a.takeSession());
        accepted = true;
      } catch {
        plaintext = undefined;
      }
    }
    if (plaintext === undefined) {
      // Undecryptable (lost state, a replay): acknowledge so the mailbox does not jam.
      await this.ack(serverId);
      return;
    }
    let payload: hw.DecodedPayload;
    try {
      payload = hw.decodePayload(plaintext);
    } catch {
      await this.ack(serverId);
      return;
    }
    const conversation = this.conversations.get(peer) ?? { peer, messages: [] };
    if (!this.conversations.has(peer)) {
      this.conversations.set(peer, conversation);
      this.meta.peers.push(peer);
    }
    let receipt: string | undefined;
    if (payload.kind === "message") {
      if (!conversation.messages.some((m) => m.id === payload.messageId)) {
        conversation.messages.push({
          id: payload.messageId,
          outgoing: false,
          text: payload.text,
          sentAtMs: payload.sentAtMs,
        });
      }
      receipt = payload.messageId;
    } else if (payload.kind === "receipt") {
      for (const id of payload.receiptIds) {
        const m = conversation.messages.find((x) => x.id === id && x.outgoing);
        if (m) m.state = "delivered";
      }
    }
    // Store before acknowledge (docs/client.md §5): the message, the session and the account
    // (one-time prekey used up) are durable before the relay may delete the envelope.
    await this.saveConversation(peer, {
      meta: this.meta,
      ...(accepted ? { account: this.account.seal(this.store.storageKey) } : {}),
    });
    this.events.onChange?.(peer);
    await this.ack(serverId);
    if (receipt) {
      const session = this.sessions.get(peer);
      if (session) {
        const ct = session.encrypt(hw.encodeReceipt([receipt]));
        await this.saveConversation(peer);
        await this.call((id) => hw.sendFrame(id, peer, ct)).catch(() => undefined);
      }
    }
  }

  private async ack(serverId: Uint8Array): Promise<void> {
    await this.call((id) => hw.ackFrame(id, serverId)).catch(() => undefined);
  }

  /** The agent's certified name, if the relay holds a certificate that `clinic` verifies. */
  async agentName(clinic: hw.Clinic, peer: string): Promise<string | undefined> {
    return this.serial.run(async () => {
      if (!this.authenticated) return undefined;
      const answer = await this.call((id) => hw.fetchCertificateFrame(id, fingerprintOf(peer)));
      const cert = answer.certificate;
      if (answer.kind !== "certificate" || cert.length === 0) return undefined;
      try {
        return clinic.verifyAgent(cert, Math.floor(Date.now() / 1000), fingerprintOf(peer));
      } catch {
        return undefined;
      }
    });
  }
}
