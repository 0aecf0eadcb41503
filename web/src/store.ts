// The browser store: one IndexedDB database per store name, one object store `kv` whose
// values are all sealed by the WebAssembly core (`StorageKey.sealValue`, XChaCha20-Poly1305),
// except `kdf`, which holds only the Argon2id salt and parameters needed to derive the key.
// Nothing here encrypts by itself.

import * as hw from "./wasm";

/** Argon2id parameters: the native client's (64 MiB, 3 passes, 1 lane; docs/browser.md). */
export const KDF_MEMORY_KIB = 64 * 1024;
export const KDF_ITERATIONS = 3;

const OBJECT_STORE = "kv";

export function databaseName(store: string): string {
  return `hushwire-${store}`;
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export async function openDatabase(store: string): Promise<IDBDatabase> {
  const open = indexedDB.open(databaseName(store), 1);
  open.onupgradeneeded = () => {
    open.result.createObjectStore(OBJECT_STORE);
  };
  return request(open);
}

/** Deletes the whole database: what "erase this browser's copy" does. */
export async function deleteDatabase(store: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const r = indexedDB.deleteDatabase(databaseName(store));
    r.onsuccess = () => resolve();
    r.onerror = () => reject(r.error);
    r.onblocked = () => resolve();
  });
}

interface KdfRecord {
  salt: Uint8Array;
  memoryKib: number;
  iterations: number;
  check: Uint8Array; // a sealed known value: tells a wrong passphrase from a new store
}

const CHECK = new TextEncoder().encode("hushwire browser store v1");

/** The database name suffix of one-off chats (`hushwire-<store>-oneoff`). */
export const ONE_OFF_SUFFIX = "-oneoff";

/**
 * A store opened with its key. Every get/put seals or opens through the wasm core; a one-off
 * store also seals every value, outside that, with WebCrypto AES-GCM under a non-extractable
 * key that exists only in this tab's memory (`SealedStore.oneOff`).
 */
export class SealedStore {
  private constructor(
    private db: IDBDatabase,
    private key: hw.StorageKey,
    private tabKey?: CryptoKey,
  ) {}

  /** Whether this store dies with the tab (a one-off chat). */
  get isOneOff(): boolean {
    return this.tabKey !== undefined;
  }

  /**
   * A one-off chat's store: database `hushwire-<store>-oneoff`, emptied first (what a closed
   * tab left is unreadable anyway). Values are sealed by the wasm core under a random
   * `StorageKey` that lives only in WebAssembly memory, and that sealed value again by WebCrypto
   * AES-GCM (random 96-bit IV, the record's name as associated data) under a non-extractable
   * 256-bit key generated here and held only by this object: it is never written anywhere,
   * cannot be exported, and goes with the tab, after which the records cannot be opened.
   */
  static async oneOff(store: string): Promise<SealedStore> {
    const name = store + ONE_OFF_SUFFIX;
    await deleteDatabase(name);
    const tabKey = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
      "encrypt",
      "decrypt",
    ]);
    return new SealedStore(await openDatabase(name), hw.StorageKey.random(), tabKey);
  }

  private async outer(name: string, sealed: Uint8Array): Promise<Uint8Array> {
    if (!this.tabKey) return sealed;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const additionalData = new TextEncoder().encode(name);
    const ct = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData },
        this.tabKey,
        sealed as Uint8Array<ArrayBuffer>,
      ),
    );
    const out = new Uint8Array(12 + ct.length);
    out.set(iv);
    out.set(ct, 12);
    return out;
  }

  private async inner(name: string, stored: Uint8Array): Promise<Uint8Array> {
    if (!this.tabKey) return stored;
    const additionalData = new TextEncoder().encode(name);
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: stored.subarray(0, 12) as Uint8Array<ArrayBuffer>, additionalData },
        this.tabKey,
        stored.subarray(12) as Uint8Array<ArrayBuffer>,
      ),
    );
  }

  private async open(name: string, stored: Uint8Array): Promise<Uint8Array> {
    return this.key.openValue(await this.inner(name, stored));
  }

  /** Whether a store of this name already holds a passphrase record. */
  static async exists(store: string): Promise<boolean> {
    const db = await openDatabase(store);
    try {
      const tx = db.transaction(OBJECT_STORE, "readonly");
      const kdf = await request(tx.objectStore(OBJECT_STORE).get("kdf"));
      return kdf !== undefined;
    } finally {
      db.close();
    }
  }

  /**
   * Opens (or creates) the store under a passphrase: Argon2id in WebAssembly with the salt kept
   * in the store. Throws "wrong passphrase" if the sealed check value does not open.
   */
  static async unlock(store: string, passphrase: string): Promise<SealedStore> {
    const db = await openDatabase(store);
    const tx = db.transaction(OBJECT_STORE, "readonly");
    const kdf = (await request(tx.objectStore(OBJECT_STORE).get("kdf"))) as KdfRecord | undefined;
    if (kdf) {
      const key = hw.deriveStorageKey(passphrase, kdf.salt, kdf.memoryKib, kdf.iterations);
      try {
        key.openValue(kdf.check);
      } catch {
        key.free();
        db.close();
        throw new Error("wrong passphrase");
      }
      return new SealedStore(db, key);
    }
    const salt = crypto.getRandomValues(new Uint8Array(16));
    const key = hw.deriveStorageKey(passphrase, salt, KDF_MEMORY_KIB, KDF_ITERATIONS);
    const record: KdfRecord = {
      salt,
      memoryKib: KDF_MEMORY_KIB,
      iterations: KDF_ITERATIONS,
      check: key.sealValue(CHECK),
    };
    const w = db.transaction(OBJECT_STORE, "readwrite");
    w.objectStore(OBJECT_STORE).put(record, "kdf");
    await new Promise<void>((resolve, reject) => {
      w.oncomplete = () => resolve();
      w.onerror = () => reject(w.error);
    });
    return new SealedStore(db, key);
  }

  get storageKey(): hw.StorageKey {
    return this.key;
  }

  async getBytes(name: string): Promise<Uint8Array | undefined> {
    const tx = this.db.transaction(OBJECT_STORE, "readonly");
    const sealed = (await request(tx.objectStore(OBJECT_STORE).get(name))) as Uint8Array | undefined;
    return sealed === undefined ? undefined : this.open(name, sealed);
  }

  async getJson<T>(name: string): Promise<T | undefined> {
    const bytes = await this.getBytes(name);
    return bytes === undefined ? undefined : (JSON.parse(new TextDecoder().decode(bytes)) as T);
  }

  /** Every value whose name starts with `prefix`, opened, in name order (one transaction). */
  async getPrefix(prefix: string): Promise<[string, Uint8Array][]> {
    const tx = this.db.transaction(OBJECT_STORE, "readonly");
    const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
    const os = tx.objectStore(OBJECT_STORE);
    const [keys, values] = await Promise.all([
      request(os.getAllKeys(range)),
      request(os.getAll(range)),
    ]);
    return Promise.all(
      keys.map(async (k, i): Promise<[string, Uint8Array]> => [
        String(k),
        await this.open(String(k), values[i] as Uint8Array),
      ]),
    );
  }

  /** Seals and writes several values in one transaction; resolves once it is durable. */
  async put(values: Record<string, Uint8Array | object>): Promise<void> {
    const sealed: [string, Uint8Array][] = Object.entries(values).map(([k, v]) => [
      k,
      this.key.sealValue(
        v instanceof Uint8Array ? v : new TextEncoder().encode(JSON.stringify(v)),
      ),
    ]);
    // All sealing is done before the transaction opens (one that waits on anything else
    // commits early).
    if (this.tabKey) {
      for (const entry of sealed) entry[1] = await this.outer(entry[0], entry[1]);
    }
    const tx = this.db.transaction(OBJECT_STORE, "readwrite", { durability: "strict" });
    for (const [k, v] of sealed) tx.objectStore(OBJECT_STORE).put(v, k);
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  close(): void {
    this.db.close();
    this.key.free();
  }
}
