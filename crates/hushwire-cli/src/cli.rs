//! The command line: global options and every command, with the help text `--help` shows.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// End-to-end encrypted chat for healthcare over a Hushwire relay.
///
/// Keeps an encrypted store (identity, sessions, contacts, sealed transcripts) in --home and
/// talks to the relay you registered with. The relay carries only ciphertext.
#[derive(Parser, Debug)]
#[command(
    name = "hushwire",
    version,
    after_help = "\
Getting started (two people, one relay):
  hushwire init                                   # create your store, prints your address
  hushwire register ws://127.0.0.1:7700/v1/websocket
  hushwire contact add bob 3fa2…e9:1              # the address bob got from `hushwire whoami`
  hushwire verify bob                             # compare the safety number with bob
  hushwire chat bob

A clinic (see `hushwire org --help`, `hushwire clinic --help`):
  hushwire org init --name 'Lakeside Clinic' --relay wss://relay.lakeside.example
  hushwire org certify \"$(hushwire certificate request)\" --name 'Dr. Ada Okafor' --roles agent
  hushwire register wss://relay.lakeside.example --certificate CERT --clinic LINK   # the agent
  hushwire clinic add LINK                                                          # a patient

Exit status: 0 success, 1 error, 3 a message only queued (send), 5 this device was wiped by its
clinic's administrator (its store is erased), 130 interrupted.

Environment:
  HUSHWIRE_HOME                 the store's directory (like --home)
  HUSHWIRE_ORG_DIR              the organization's directory for `hushwire org` (like --org-dir)
  HUSHWIRE_PASSPHRASE           the store's passphrase, for scripts (else --passphrase-file, else a
                                prompt)
  HUSHWIRE_ORG_PASSPHRASE       the organization key's passphrase, for `hushwire org` init,
                                certify, revoke and set-relay (else --passphrase-file, else a
                                prompt); never the store's, so the two are not mixed up
  HUSHWIRE_ARCHIVE_PASSPHRASE   the clinic archive key's passphrase, for `org archive-policy`
                                and `archive` (else a prompt); its own, so supervisors never
                                need the organization key's
  HUSHWIRE_LOG                  log filter for diagnostics on stderr, e.g. `info`
  HUSHWIRE_INSECURE_FAST_KDF=1  TEST-ONLY: `init` derives the store key with insecure, fast
                                Argon2 parameters. Never use it for a real store."
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// The directory of the store (`<home>/client.db`) [default: $HOME/.hushwire]
    #[arg(long, env = "HUSHWIRE_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Machine-readable JSON output (read commands: whoami, contact list, verify, recv,
    /// transcript list/verify/open, auditor verify/open, audit verify, queue, members,
    /// conversations, legal-hold, retention).
    #[arg(long, global = true)]
    pub json: bool,
    /// Read the passphrase from the first line of FILE (otherwise $HUSHWIRE_PASSPHRASE, otherwise
    /// a prompt on the terminal). For `hushwire org` init, certify, revoke and set-relay it is
    /// the organization key's passphrase (otherwise $HUSHWIRE_ORG_PASSPHRASE), not the device's.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Also trust this CA certificate (PEM) for wss:// relays with a private CA.
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// What this process is (`hushwire chat`), written into the store's lock file so that a
    /// second command on the same store can say who holds it. Set from the command, never from
    /// its arguments (they can hold message text).
    #[arg(skip)]
    pub label: String,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the encrypted store with a new identity and print this device's address.
    #[command(after_help = "\
Examples:
  hushwire --home /tmp/alice init
  hushwire --home /tmp/alice-phone init --link -      # another device of yours: paste the code

A device of a person who already has one is linked, not created: run `hushwire devices link`
on the device you have, then `init --link CODE` on the new one within ten minutes. It takes
the same identity and registers at the same relay, and every message to you then reaches both.

You are asked for a passphrase twice (at least 8 characters). It cannot be recovered.
TEST-ONLY: with HUSHWIRE_INSECURE_FAST_KDF=1 the store key is derived with insecure, fast
Argon2 parameters (for automated tests); a warning is printed. Never use it for a real store.")]
    Init {
        /// The device id of this store's account (a new identity only; a linked device gets
        /// its number from the code).
        #[arg(long, default_value_t = 1, conflicts_with = "link")]
        device_id: u32,
        /// Make this a further device of a person: the one-time code `hushwire devices link`
        /// showed on one of their devices, a file holding it, or `-` to read it from standard
        /// input (keeps it out of shell history). The store gets that identity and registers
        /// at once.
        #[arg(long, value_name = "CODE")]
        link: Option<String>,
    },
    /// Register this device with a relay and publish its prekeys.
    #[command(after_help = "\
Examples:
  hushwire register ws://127.0.0.1:7700/v1/websocket
  hushwire register wss://relay.clinic.example --invite 6f1c…   # a relay that requires invites
  hushwire --ca-cert clinic-ca.pem register wss://relay.internal")]
    Register {
        /// The relay's WebSocket URL (wss://host, or ws:// on a loopback address).
        relay_url: String,
        /// Invite token, for relays that only let invited devices register.
        #[arg(long)]
        invite: Option<String>,
        /// Replace the pinned relay key with the key of this fingerprint (64 hex digits). Needed
        /// only when the relay's key changed: check the new fingerprint with the relay's
        /// operator first. Without it, a relay presenting another key than the pinned one is
        /// refused and nothing is sent to it.
        #[arg(long, value_name = "FINGERPRINT")]
        accept_relay_key: Option<String>,
        /// Register as clinic staff with this agent certificate (a file, or the line
        /// `hushwire org certify` printed). It must certify this device's identity.
        // base64url text may begin with `-`: a value, never a flag.
        #[arg(
            long,
            value_name = "CERT",
            conflicts_with = "accept_relay_key",
            allow_hyphen_values = true
        )]
        certificate: Option<String>,
        /// Pin this clinic too (its `hushwire-clinic:` link, or a file holding it); the
        /// certificate must be the clinic's.
        #[arg(long, value_name = "LINK", requires = "certificate")]
        clinic: Option<String>,
    },
    /// A clinic's organization key, kept offline by its administrator: create it, certify
    /// agents, revoke certificates, print the clinic link.
    #[command(after_help = "\
The organization key signs agent certificates, revocation lists and the clinic link. It is
sealed under a passphrase in --org-dir (default $HOME/.hushwire-org): keep that directory on
the administrator's machine, offline if possible, and back it up.

Walkthrough:
  hushwire org init --name 'Lakeside Clinic' --relay wss://relay.lakeside.example
  hushwire org link                           # give the link (or its QR code) to patients
  # on the agent's device:  hushwire certificate request   -> one line, send it to the admin
  hushwire org certify REQUEST --name 'Dr. Ada Okafor' --roles agent --days 365
  # on the agent's device:  hushwire register URL --certificate CERT --clinic LINK
  hushwire org revoke 3                       # writes a signed revocation list
  # on an admin's device:   hushwire org publish-revocations LIST
  hushwire org set-relay wss://relay2.lakeside.example   # the clinic moved its relay
  hushwire org show

Scripts pass the organization key's passphrase in $HUSHWIRE_ORG_PASSPHRASE (or
--passphrase-file); $HUSHWIRE_PASSPHRASE is the devices' and is never used for it.")]
    Org {
        /// The organization's directory (the sealed key and its state)
        /// [default: $HOME/.hushwire-org]
        #[arg(long, env = "HUSHWIRE_ORG_DIR", global = true, value_name = "DIR")]
        org_dir: Option<PathBuf>,
        /// Which organization command.
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// This device's agent certificate: the request to send to the clinic's administrator,
    /// installing a renewed certificate, showing it.
    #[command(after_help = "\
Examples:
  hushwire certificate request                # one line: send it to the administrator
  hushwire certificate install cert.txt       # a renewed certificate (sent to the relay)
  hushwire certificate show")]
    Certificate {
        /// Which certificate command.
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// The clinic this device belongs to: pin it from its link, show it.
    #[command(after_help = "\
A patient adds the clinic's link once (from its web site, a letter or a QR code). The link is
signed by the clinic's organization key; from then on, contacts who hold a certificate of that
clinic are shown as `Name \u{2014} verified agent of Clinic`, and one whose certificate fails
(expired, revoked, another clinic's, forged) is shown with the reason and gets nothing.

Examples:
  hushwire clinic add hushwire-clinic:AQIi…
  hushwire clinic add clinic-link.txt --invite 6f1c…    # registers at the clinic's relay
  hushwire clinic show")]
    Clinic {
        /// Which clinic command.
        #[command(subcommand)]
        command: ClinicCommand,
    },
    /// This person's devices: link a new one, list them, remove a lost one.
    #[command(after_help = "\
Your devices share one identity: whoever writes to you reaches all of them, and what one of
them sends is copied to the others, so every device holds the whole conversation.

Examples:
  hushwire devices link             # shows a one-time code for the new device
  hushwire devices list
  hushwire devices remove 2         # a lost phone: the relay refuses it from now on")]
    Devices {
        /// Which devices command.
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Patient: open a conversation with your pinned clinic; prints its id.
    #[command(after_help = "\
You write to the clinic, not to a person: the conversation waits in the clinic's queue until an
agent on duty claims it. Your devices are its members from the start (your device list is
published first if the relay has none).

Example:
  hushwire open-conversation")]
    OpenConversation {
        /// Print the conversation id alone (for scripts: `"$(cat conv.txt)"`).
        #[arg(long)]
        id_only: bool,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Agent: be told when the queue changes (on) or not (off).
    #[command(after_help = "\
Examples:
  hushwire on-duty on
  hushwire on-duty off")]
    OnDuty {
        /// `on` or `off`.
        state: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Agent: list the conversations waiting in the clinic's queue, oldest first.
    #[command(after_help = "\
Each line is a conversation id (give it to `claim`), its state and since when it waits.

Example:
  hushwire queue")]
    Queue {
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Agent: take a conversation from the queue.
    #[command(after_help = "\
The claim is a signed membership change adding this device as the agent. If another agent
claimed it first, the claim fails with that reason and nothing changes.

Example:
  hushwire claim 5f0c9a1e2b3d4c5e6f708192a3b4c5d6")]
    Claim {
        /// The conversation id (32 hex digits, from `hushwire queue`).
        conversation: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Who is in a conversation, verified from its signed history.
    #[command(after_help = "\
Staff are named from their clinic certificate (\"Name, verified agent of Clinic\"); every
membership change was checked by this device, not taken from the relay on trust.

Example:
  hushwire members 5f0c9a1e2b3d4c5e6f708192a3b4c5d6")]
    Members {
        /// The conversation id (32 hex digits).
        conversation: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Supervisor: read along in a conversation without writing.
    #[command(after_help = "\
Only `--read-only` exists: a supervisor never writes. Leave again with `hushwire leave`.

Example:
  hushwire join --read-only 5f0c9a1e2b3d4c5e6f708192a3b4c5d6")]
    Join {
        /// Join as a read-only supervisor (required).
        #[arg(long, required = true)]
        read_only: bool,
        /// The conversation id (32 hex digits).
        conversation: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Supervisor: read a conversation's archive at the relay with the clinic's archive key.
    #[command(after_help = "\
KEY-FILE is the archive key `hushwire org archive-policy` wrote, sealed under the archive
passphrase chosen then (asked for, or $HUSHWIRE_ARCHIVE_PASSPHRASE), not the organization key's. Each entry is checked against the
conversation's verified membership: one whose sender was not a member that writes at its epoch,
or not the device the relay saw file it, is marked NOT VERIFIED. Opening an archive is recorded
in this device's audit log. Text is shown escaped, never interpreted by the terminal.

Example:
  hushwire archive 5f0c9a1e2b3d4c5e6f708192a3b4c5d6 --key-file archive-key-1796100000.sealed")]
    Archive {
        /// The conversation id (32 hex digits).
        conversation: String,
        /// The sealed archive private key.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Agent on a conversation: hand it to another agent, or back to the queue, with a note.
    #[command(after_help = "\
AGENT is a contact's name, an address (`hushwire whoami --address` on the agent's device) or an
identity fingerprint (64 hex digits); the agent must hold the
clinic's agent certificate and have gone on duty once (which publishes its device list). `queue`
hands the conversation back to the clinic's queue: the next agent to claim it gets the note, but
not the conversation so far (only what the patient writes from then on; hand it to a named agent
to share the history). To a named agent: the agent is added, the conversation so far
(the messages on this device, not notes, not recalled ones) is shared with them unless
--no-history (recorded in the audit log), and you are removed; the patient sees who answers now. The --note (one line, at most 200 bytes) goes to
staff devices only (the new agent, supervisors, and when handing back, the agents on duty),
never to the patient.

Examples:
  hushwire handoff 5f0c9a1e2b3d4c5e6f708192a3b4c5d6 ben --note \"penicillin allergy\"
  hushwire handoff 5f0c9a1e2b3d4c5e6f708192a3b4c5d6 queue")]
    Handoff {
        /// The conversation id (32 hex digits).
        conversation: String,
        /// The agent to hand to (contact name, address or 64-hex fingerprint), or `queue`.
        to: String,
        /// A one-line note for staff only.
        #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
        note: Option<String>,
        /// Do not share the conversation so far with the new agent.
        #[arg(long)]
        no_history: bool,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Recall a message you sent to a conversation, within 10 minutes of sending it.
    #[command(after_help = "\
Every member's device then shows the message as recalled by you (with the time); it is not
erased: the clinic's record keeps it. `hushwire send CONVERSATION TEXT` prints the message id
(`recv --json` shows the ids of what others send). In `hushwire chat`, /recall recalls your last
message.

Example:
  hushwire recall 5f0c9a1e2b3d4c5e6f708192a3b4c5d6 0123456789abcdef0123456789abcdef")]
    Recall {
        /// The conversation id (32 hex digits).
        conversation: String,
        /// The message id (32 hex digits).
        message: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// List the clinic conversations this device holds, most recently active first.
    #[command(after_help = "\
Shows each conversation's id, when this device last recorded something in it (a message, a
note, a membership change) and whether it is under a legal hold. Nothing is sent to the relay.

Example:
  hushwire conversations")]
    Conversations,
    /// Staff: place or lift a legal hold on a conversation (retention never deletes it while held).
    #[command(after_help = "\
The clinic's retention (`hushwire retention`) deletes conversations from staff devices once
their last activity is older than the clinic's retention period; a conversation under a legal
hold stays until the hold is lifted. The hold is kept on this device only: place it on each
staff device that holds the conversation.

Examples:
  hushwire legal-hold 5f0c9a1e2b3d4c5e6f708192a3b4c5d6 on
  hushwire legal-hold 5f0c9a1e2b3d4c5e6f708192a3b4c5d6 off")]
    LegalHold {
        /// The conversation id (32 hex digits).
        conversation: String,
        /// `on` places the hold, `off` lifts it.
        state: String,
    },
    /// Staff: apply the clinic's retention now (it also runs at every connection and hourly).
    #[command(after_help = "\
Deletes from this device every conversation whose last activity is older than the retention
period in the clinic's signed archive policy (`org archive-policy --retention-days N`), unless it
is under a legal hold. The deletion overwrites the freed space in the store. A patient's device
keeps its own copy; the relay applies the same period to the clinic's archive.

Example:
  hushwire retention")]
    Retention {
        /// Seconds to wait for the relay (the archive policy is read from it).
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Staff: leave a conversation; an agent's leaving hands it back to the queue.
    #[command(after_help = "\
Example:
  hushwire leave 5f0c9a1e2b3d4c5e6f708192a3b4c5d6")]
    Leave {
        /// The conversation id (32 hex digits).
        conversation: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Order a device of the clinic wiped (admin devices only).
    #[command(after_help = "\
Signs a wipe order with this device's identity and its admin certificate and hands it to the
relay, which refuses the target from now on and gives it the order at its next login. The
target checks the order (signed by an admin of its clinic, for this very device) and only then
erases its store; it reports `This device was wiped by NAME, admin of CLINIC` and exits with
status 5.

Example:
  hushwire wipe 3fa2…e9:2")]
    Wipe {
        /// The device's address (64 hex digits, a colon, the device id).
        address: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Show this device's address (give it to your contacts) and fingerprint.
    #[command(after_help = "\
Examples:
  hushwire whoami
  hushwire whoami --address               # the address alone, for scripts
  hushwire whoami --json | jq -r .address")]
    Whoami {
        /// Print only the address.
        #[arg(long)]
        address: bool,
    },
    /// Manage contacts.
    #[command(after_help = "\
Examples:
  hushwire contact add clinic 3fa2…e9:1
  hushwire contact rename clinic clinic-night
  hushwire contact remove clinic-night
  hushwire contact list --json")]
    Contact {
        /// Which contact command.
        #[command(subcommand)]
        command: ContactCommand,
    },
    /// Show the safety number shared with a contact and mark the contact verified.
    #[command(after_help = "\
Compare the 60 digits with your contact in person or over a trusted channel (a phone call).
If they match, the relay cannot be reading along.

Examples:
  hushwire verify bob                                 # shows the number, asks whether it matches
  hushwire verify bob --confirm '12345 67890 …'       # marks bob verified if the digits match
  hushwire verify bob --json")]
    Verify {
        /// The contact's name.
        name: String,
        /// Mark the contact verified if these digits (spaces ignored) are the safety number.
        #[arg(long, value_name = "DIGITS")]
        confirm: Option<String>,
        /// Seconds to wait for the relay when the contact's identity must be fetched.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Send a message and wait until the relay holds it.
    #[command(after_help = "\
Exits 0 once the relay holds the message, 3 if it is only queued (the relay was not reachable
within --wait; it goes out the next time any hushwire command connects), 1 on an error.

NAME may also be a clinic conversation's id (32 hex digits): everyone on the conversation gets
the message (`hushwire chat` for a live conversation). A conversation message needs the relay
(the membership is checked first): with the relay unreachable it exits 1 and nothing is queued.

Examples:
  hushwire send bob 'Your results are ready.'
  echo 'Please call the clinic.' | hushwire send bob
  hushwire send 5f0c9a1e2b3d4c5e6f708192a3b4c5d6 'The rash is spreading.'")]
    Send {
        /// The contact's name, or a conversation id.
        name: String,
        /// The text (read from standard input when absent).
        message: Option<String>,
        /// Seconds to wait for the relay to take the message.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Fetch and print everything waiting at the relay, then exit.
    #[command(after_help = "\
Prints each message received (the sender's time, and the arrival time too when they differ by
more than 2 minutes; contact; text), delivery receipts and warnings (gaps, undecryptable
messages, identity changes, new contacts). Control, bidirectional and invisible format
characters in names and texts are shown escaped (`\\x1b`, `\\u{202e}`), and a message of several
lines is printed as one block of lines starting with `    | `. With --json: one JSON object per
line, with the exact text.

Clinic conversations too, each line starting with `(conversation ID)`: who joined or left
(verified names; a hand-off, a takeover from a revoked agent), the messages (staff notes on
staff devices only), recalls, and a conversation left with no verified agent. Each is shown
once, also when another command (`send`, `members`, `queue`) received it first; `hushwire chat
ID` shows a conversation's whole history.

Each message is marked read just before it is printed, so a recv that is killed never shows a
message twice; one killed between the mark and the print is not shown by recv again (it is in
`hushwire transcript open`).

Examples:
  hushwire recv
  hushwire recv --json --wait 10")]
    Recv {
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Chat interactively with a contact, or in a clinic conversation (a patient: `chat clinic`).
    #[command(after_help = "\
Type /quit (or press Ctrl-D) to leave; Ctrl-C leaves at once with exit status 130. Leaving
clears the screen and its scrollback; /quit waits up to 5 s for the relay to take what you typed
(the rest stays queued for the next connection). /help lists the commands; any other line starting with / is refused
and never sent (start a line with // to send one beginning with /). Each message shows the
sender's time, and its arrival time too when they differ by more than 2 minutes.

After --lock-after seconds without a key pressed (at most 3600) the screen and its scrollback
are cleared and locked (automatic logoff), and the half-typed line is discarded; messages that
arrive meanwhile are kept and shown once you enter the passphrase again. /lock locks at once.

TARGET is a contact's name; else a conversation id (32 hex digits: everyone on the conversation
reads what you send, and you see who answers, verified from the clinic's certificates); else
your pinned clinic's name or the word `clinic`, which opens a new conversation with the clinic
(a patient's way in: it waits in the clinic's queue until an agent on duty answers). In a
conversation, /recall recalls the last message you sent (within 10 minutes).

Examples:
  hushwire chat bob
  hushwire chat clinic --lock-after 120
  hushwire chat 5f0c9a1e2b3d4c5e6f708192a3b4c5d6")]
    Chat {
        /// A contact's name, a conversation id, or your clinic (`clinic`).
        #[arg(value_name = "TARGET")]
        name: String,
        /// Seconds without a key pressed before the screen locks (1 to 3600).
        #[arg(long, default_value_t = 300, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=crate::chat::MAX_LOCK_AFTER_SECS))]
        lock_after: u64,
    },
    /// Local sealed transcripts: list, verify, open, export to auditors.
    #[command(after_help = "\
Examples:
  hushwire transcript list
  hushwire transcript open bob
  hushwire transcript export --to 8c1f…42 --out bob.hwx bob")]
    Transcript {
        /// Which transcript command.
        #[command(subcommand)]
        command: TranscriptCommand,
    },
    /// Auditor tools: make a key pair, verify and open exports sealed to it (no store needed).
    #[command(after_help = "\
Examples:
  hushwire auditor keygen                  # writes ./auditor.key, prints the public key
  hushwire auditor pubkey --key auditor.key
  hushwire auditor verify bob.hwx --key auditor.key
  hushwire auditor open bob.hwx --key auditor.key --json")]
    Auditor {
        /// Which auditor command.
        #[command(subcommand)]
        command: AuditorCommand,
    },
    /// Where each message you sent to a contact is: queued, sent, delivered, not confirmed.
    /// Without a contact: the relay and the fingerprint of the relay key this device pinned.
    #[command(after_help = "\
A message is `sent` once the relay holds it and `delivered` once the contact's device stored it
(an encrypted receipt). With no receipt after 2 minutes it shows as NOT CONFIRMED. If the
contact's device could not read it, the two devices start a new session by themselves and it is
sent again (`retrying`); after 3 such resends it is FAILED.

The relay key is pinned when you register: compare its fingerprint with the one the relay's
operator publishes (`hushwire-relay relay-key` prints it). A relay that presents another key is
refused (\"the relay's key changed\"); only `register` pins a new one.

Examples:
  hushwire status
  hushwire status bob
  hushwire status bob --json")]
    Status {
        /// The contact's name; without one, the relay and its pinned key.
        name: Option<String>,
    },
    /// Messages not yet taken by the relay: list them, or cancel one.
    #[command(after_help = "\
A message waits in the outbox while the relay cannot be reached (or cannot take it yet). Until
the relay holds it, it can be cancelled: it is then never sent. Its record in your transcript
stays (transcripts are append-only), and your device's audit chain records the cancellation.

Examples:
  hushwire outbox list
  hushwire outbox cancel 5f0c…e1")]
    Outbox {
        /// Which outbox command.
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Write an encrypted copy of the store (the supported way to back it up).
    #[command(after_help = "\
The copy is consistent and stays encrypted under the store's passphrase. Copying the store's
files by hand while a hushwire command runs is not safe; this is.

Example:
  hushwire backup ~/hushwire-backup.db")]
    Backup {
        /// Where to write the copy (must not exist).
        out: std::path::PathBuf,
    },
    /// Put a backup in place of the store (no other hushwire command may be running on it).
    #[command(after_help = "\
You are asked for the backup's passphrase, which the store then has. The store it replaces is
kept beside it (client.db.replaced-<time>), never deleted; a backup of another identity than the
one in this home is refused unless you pass --replace-other-store. If this device sent messages
after the backup, the next connection to the relay notices that the store went back in time and
starts new sessions with every contact before sending anything, so no message key is ever used
twice. Messages this device received after the backup are not in the restored store.

Example:
  hushwire restore ~/hushwire-backup.db")]
    Restore {
        /// The backup file (from `hushwire backup`).
        file: std::path::PathBuf,
        /// Restore even though the backup is of another store (another identity) than the one
        /// in this home; the replaced store is kept aside, not deleted.
        #[arg(long)]
        replace_other_store: bool,
    },
    /// This device's tamper-evidence check.
    #[command(after_help = "\
Example:
  hushwire audit verify")]
    Audit {
        /// Which audit command.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Contact commands.
#[derive(Subcommand, Debug)]
pub enum ContactCommand {
    /// Add a contact by the address they gave you (`hushwire whoami` on their side).
    #[command(after_help = "\
An address that is already another contact's is refused: use `hushwire contact rename`.

Examples:
  hushwire contact add bob 3fa2…e9:1
  hushwire contact add bob 77c0…1d:1 --replace     # bob really has a new identity")]
    Add {
        /// A name of your choice (1 to 64 printable characters).
        name: String,
        /// The contact's address: 64 hex digits, a colon, the device id.
        address: String,
        /// Replace the address of an existing contact of that name (their identity changed);
        /// sending is blocked until you verify them again.
        #[arg(long)]
        replace: bool,
    },
    /// Give a contact another name (verification, sessions and transcript stay).
    #[command(after_help = "\
Example:
  hushwire contact rename unknown-3fa2c1d0 clinic")]
    Rename {
        /// The contact's current name.
        old: String,
        /// Its new name (1 to 64 printable characters).
        new: String,
    },
    /// Remove a contact: its sessions are dropped, its transcript is kept.
    #[command(after_help = "\
Refused while messages or receipts to the contact are still queued, unless --discard-queued.
The transcript stays (transcript list/open/export still show it). Adding the same address again
(`hushwire contact add NAME ADDRESS`) restores the contact.

Examples:
  hushwire contact remove robert
  hushwire contact remove robert --discard-queued")]
    Remove {
        /// The contact's name.
        name: String,
        /// Also delete the messages and receipts still queued for the contact.
        #[arg(long)]
        discard_queued: bool,
    },
    /// List contacts: name, address, verified, identity changed.
    #[command(after_help = "\
Examples:
  hushwire contact list
  hushwire contact list --json")]
    List,
}

/// Organization commands (`hushwire org`).
#[derive(Subcommand, Debug)]
pub enum OrgCommand {
    /// Create the organization key (sealed under a new passphrase) and the clinic's link.
    #[command(after_help = "\
Example:
  hushwire org init --name 'Lakeside Clinic' --relay wss://relay.lakeside.example
  hushwire org init --name 'Lakeside Clinic' --relay wss://relay.lakeside.example --org-dir /media/usb/org")]
    Init {
        /// The clinic's name as patients see it (1 to 64 bytes, no control characters).
        #[arg(long)]
        name: String,
        /// The clinic's relay (wss://host, or ws:// on loopback), put into the clinic link.
        #[arg(long, value_name = "URL")]
        relay: String,
    },
    /// Certify an agent: signs their identity (the REQUEST their `hushwire certificate
    /// request` printed) with a name, roles and a validity, and prints the certificate.
    #[command(after_help = "\
The certificate is one line of text: send it back to the agent, who registers with
`hushwire register URL --certificate CERT --clinic LINK`. Each gets the next serial number
(revoke it with `hushwire org revoke SERIAL`). Validity starts 5 minutes ago (clocks differ).

Examples:
  hushwire org certify AQID… --name 'Dr. Ada Okafor' --roles agent
  hushwire org certify request.txt --name 'Sam Lee' --roles agent,admin --days 90 --out sam.cert")]
    Certify {
        /// The agent's request: the line `hushwire certificate request` printed, or a file.
        // base64url text may begin with `-` (one request in 64): a value, never a flag.
        #[arg(allow_hyphen_values = true)]
        request: String,
        /// The agent's name as patients will see it (1 to 64 bytes, no control characters).
        #[arg(long)]
        name: String,
        /// Comma-separated roles: agent, supervisor, admin.
        #[arg(long, value_parser = parse_roles)]
        roles: hushwire_proto::clinic::Roles,
        /// Days of validity (1 to 3650).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
        days: u64,
        /// Also write the certificate to FILE (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate by serial: signs the next revocation list and writes it to a file.
    #[command(after_help = "\
The list names every serial revoked so far and has a higher sequence number than the last one.
It takes effect once an admin device publishes it to the relay:
  hushwire org publish-revocations LIST        (on an admin's device)

Examples:
  hushwire org revoke 3
  hushwire org revoke 3 --out /media/usb/revocations.txt")]
    Revoke {
        /// The certificate's serial number (`hushwire org show` lists them).
        serial: u64,
        /// Where to write the list [default: DIR/revocations-SEQUENCE.txt]; never overwritten.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Create the clinic's archive key and sign an archive policy naming it (retention in days).
    #[command(after_help = "\
Every conversation message is also sealed to the clinic's archive key (docs/conversations.md
§7), so the clinic's record does not depend on an agent's device. This makes a new archive key
pair: the policy (public key, retention, signed by the organization key) goes to
DIR/archive-policy-SEQUENCE.txt, to be published from an admin device with `hushwire org
publish-archive-policy`; the private key goes to DIR/archive-key-SEQUENCE.sealed, sealed under
a new archive passphrase (asked for twice, or $HUSHWIRE_ARCHIVE_PASSPHRASE), for the clinic's
supervisors (`hushwire archive`), who then never need the organization key's passphrase. The
sequence is the signing time in seconds, so a newer policy replaces an older one. Neither file
is ever overwritten.

Example:
  hushwire org archive-policy --retention-days 2190")]
    ArchivePolicy {
        /// Days the relay keeps archived messages after a conversation's last activity
        /// (1 to 65535).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u16).range(1..))]
        retention_days: u16,
    },
    /// Publish the clinic's archive policy to the relay from this (admin) device.
    #[command(after_help = "\
Run it on a device registered with an admin certificate of the clinic. Senders then seal a copy
of every conversation message to the policy's key; the relay refuses a policy that is not newer
than the one it holds, or not signed by the clinic.

Example:
  hushwire org publish-archive-policy archive-policy-1796100000.txt")]
    PublishArchivePolicy {
        /// The policy: the file `hushwire org archive-policy` wrote, or its line of text.
        policy: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Publish a revocation list to the relay from this (admin) device.
    #[command(after_help = "\
Run it on a device registered with an admin certificate of the clinic (it uses --home, not
--org-dir). The relay refuses a list that is not newer than the one it holds.

Example:
  hushwire org publish-revocations revocations-2.txt")]
    PublishRevocations {
        /// The list: the file `hushwire org revoke` wrote, or its line of text.
        #[arg(allow_hyphen_values = true)]
        list: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Move the clinic to another relay: re-signs the clinic link with the new URL.
    #[command(after_help = "\
The organization key, its certificates and its revocations stay as they are; only the link
changes. Start the new relay with the new link (`--clinic-link`) and give the link to patients
and agents again (`hushwire org link`).

Example:
  hushwire org set-relay wss://relay2.lakeside.example")]
    SetRelay {
        /// The new relay (wss://host, or ws:// on loopback).
        #[arg(value_name = "URL")]
        relay: String,
    },
    /// Print the clinic link, and a QR code of it for phones.
    #[command(after_help = "\
Examples:
  hushwire org link
  hushwire org link --no-qr > clinic-link.txt")]
    Link {
        /// Print the link only, without the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Show the organization: name, key fingerprint, relay, certificates, revoked serials.
    #[command(after_help = "\
Examples:
  hushwire org show
  hushwire org show --json")]
    Show {
        /// Also show an org.json that carries no signature (made before hushwire signed its
        /// state), to check it before `hushwire org sign-state`.
        #[arg(long)]
        unsigned: bool,
    },
    /// Sign an org.json made before hushwire signed its state, after checking it with
    /// `hushwire org show --unsigned`. A signed state is never re-signed.
    #[command(after_help = "\
Needs the organization key's passphrase. With revocations, the directory must hold the last
revocation list (last-revocations.txt, or the revocations-N.txt `org revoke` wrote) and it must
revoke exactly the serials org.json names.

Example:
  hushwire org show --unsigned && hushwire org sign-state")]
    SignState,
}

/// `--roles agent,supervisor`.
fn parse_roles(text: &str) -> Result<hushwire_proto::clinic::Roles, String> {
    text.parse()
}

/// Certificate commands.
#[derive(Subcommand, Debug)]
pub enum CertificateCommand {
    /// Print this device's certificate request (its identity key, one line of base64url).
    #[command(after_help = "\
Send the line to the clinic's administrator, who certifies it with `hushwire org certify`.
It holds no secret.

Example:
  hushwire certificate request")]
    Request,
    /// Install a renewed certificate: checked, sent to the relay, stored.
    #[command(after_help = "\
Example:
  hushwire certificate install ada-2027.cert")]
    Install {
        /// The certificate: a file, or the line `hushwire org certify` printed.
        #[arg(allow_hyphen_values = true)]
        certificate: String,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Show this device's certificate and whether it verifies now.
    Show,
}

/// Devices commands.
#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// Link a new device: prints a one-time code to type on it (`hushwire init --link CODE`).
    #[command(after_help = "\
The code carries your identity's keys, sealed, through the relay: anyone who reads it before
your new device uses it could become you. Type it only on your own device, within ten
minutes; it works once.

Examples:
  hushwire devices link
  hushwire devices link --code-only > /media/usb/code.txt   # then on the new device:
  hushwire init --link /media/usb/code.txt")]
    Link {
        /// Print only the code (to write it to a file the new device reads).
        #[arg(long)]
        code_only: bool,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// List this person's devices (this one marked), as the newest signed list has them.
    List,
    /// Remove one of this person's devices: it stops receiving, and the relay refuses it.
    Remove {
        /// The device's number, as `hushwire devices list` shows it.
        device_id: u32,
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
}

/// Clinic commands.
#[derive(Subcommand, Debug)]
pub enum ClinicCommand {
    /// Pin the clinic of a link; registers at its relay if this device is not registered yet.
    Add {
        /// The clinic link (`hushwire-clinic:…`), or a file holding it.
        link: String,
        /// Invite token, if the clinic's relay registers only invited devices.
        #[arg(long)]
        invite: Option<String>,
    },
    /// Show the pinned clinic: name, organization key fingerprint, relay, revocation list.
    Show,
}

/// Transcript commands.
#[derive(Subcommand, Debug)]
pub enum TranscriptCommand {
    /// List local transcripts (one per contact with messages).
    #[command(after_help = "\
Example:
  hushwire transcript list --json")]
    List,
    /// Verify a contact's transcript: every record authentic, chained, in order, none missing.
    #[command(after_help = "\
Example:
  hushwire transcript verify bob")]
    Verify {
        /// The contact's name.
        name: String,
    },
    /// Verify a contact's transcript and print its records.
    #[command(after_help = "\
Examples:
  hushwire transcript open bob
  hushwire transcript open bob --json")]
    Open {
        /// The contact's name.
        name: String,
    },
    /// Export transcripts sealed to auditor public keys (all transcripts if no NAME is given).
    #[command(after_help = "\
The export is written to FILE.partial and renamed to FILE once complete, so FILE is never a
truncated export. Open it with `hushwire auditor open FILE --key KEYFILE`.

Examples:
  hushwire transcript export --to 8c1f…42 --out bob.hwx bob
  hushwire transcript export --to 8c1f…42 --to 19ab…07 --out all.hwx")]
    Export {
        /// An auditor's public key (64 hex digits, from `hushwire auditor keygen`); 1 to 16.
        #[arg(long, required = true, value_name = "AUDITOR_PUBLIC_HEX")]
        to: Vec<String>,
        /// The export file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Contacts whose transcripts to export (default: all).
        names: Vec<String>,
    },
}

/// Auditor commands.
#[derive(Subcommand, Debug)]
pub enum AuditorCommand {
    /// Generate an auditor key pair: the secret goes to FILE (mode 0600), the public key is
    /// printed (give it to the clinics that export to you).
    #[command(after_help = "\
Examples:
  hushwire auditor keygen                      # writes ./auditor.key
  hushwire auditor keygen --out ~/keys/clinic-audit.key
  hushwire auditor pubkey --key auditor.key    # the public key again, at any time")]
    Keygen {
        /// Where to write the secret key (64 hex digits). Never overwritten.
        #[arg(long, value_name = "FILE", default_value = "auditor.key")]
        out: PathBuf,
    },
    /// Print the public key of an auditor key file again (give it to the clinics).
    #[command(after_help = "\
Example:
  hushwire auditor pubkey --key auditor.key")]
    Pubkey {
        /// The auditor's secret key file (from `hushwire auditor keygen`).
        #[arg(long, value_name = "FILE", default_value = "auditor.key")]
        key: PathBuf,
    },
    /// Verify an export: who signed it, and per transcript its id, signer, records,
    /// checkpoints and unsigned tail. Any change to the file fails, and so does a record a
    /// recipient forged after the last checkpoint.
    #[command(after_help = "\
Examples:
  hushwire auditor verify bob.hwx --key auditor.key
  hushwire auditor verify bob.hwx --key auditor.key --exporter 3f2a…(64 hex digits)")]
    Verify {
        /// The export file.
        export: PathBuf,
        /// The auditor's secret key file (from `hushwire auditor keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The fingerprint (64 hex digits, obtained from the device out of band) of the device
        /// that must have signed the export. Without it, the signer's fingerprint is printed
        /// for you to compare.
        #[arg(long, value_name = "FINGERPRINT")]
        exporter: Option<String>,
    },
    /// Verify an export and print its records (only once the whole export has verified).
    #[command(after_help = "\
Examples:
  hushwire auditor open bob.hwx --key auditor.key
  hushwire auditor open bob.hwx --key auditor.key --json")]
    Open {
        /// The export file.
        export: PathBuf,
        /// The auditor's secret key file (from `hushwire auditor keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The fingerprint (64 hex digits) of the device that must have signed the export.
        #[arg(long, value_name = "FINGERPRINT")]
        exporter: Option<String>,
    },
}

/// Outbox commands.
#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// List the queued messages: id, recipient, state.
    List,
    /// Take a queued message out of the outbox so it is never sent.
    Cancel {
        /// The message id (32 hex digits, from `hushwire outbox list`).
        id: String,
    },
}

/// Audit commands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify every local transcript (the same check as `hushwire transcript verify`, over all
    /// of them) and this device's audit chain, and report each: this is the client's
    /// tamper-evidence check. The relay has its own, `hushwire-relay audit verify`, for its
    /// audit chain.
    #[command(after_help = "\
The device audit chain records metadata only (store unlocked, sessions started, identities
changed, contacts verified, transcripts checkpointed), hash-chained and signed by this device.
Exits non-zero if any transcript or the chain fails.

Examples:
  hushwire audit verify
  hushwire audit verify --json")]
    Verify,
}

impl Command {
    /// The command's name as typed (`chat`, `transcript open`), without its arguments.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Init { .. } => "init",
            Self::Register { .. } => "register",
            Self::Whoami { .. } => "whoami",
            Self::Contact { command } => match command {
                ContactCommand::Add { .. } => "contact add",
                ContactCommand::List => "contact list",
                ContactCommand::Rename { .. } => "contact rename",
                ContactCommand::Remove { .. } => "contact remove",
            },
            Self::Verify { .. } => "verify",
            Self::Send { .. } => "send",
            Self::Recv { .. } => "recv",
            Self::Chat { .. } => "chat",
            Self::Transcript { command } => match command {
                TranscriptCommand::List => "transcript list",
                TranscriptCommand::Verify { .. } => "transcript verify",
                TranscriptCommand::Open { .. } => "transcript open",
                TranscriptCommand::Export { .. } => "transcript export",
            },
            Self::Auditor { .. } => "auditor",
            Self::Audit { .. } => "audit verify",
            Self::Status { .. } => "status",
            Self::Outbox { command } => match command {
                OutboxCommand::List => "outbox list",
                OutboxCommand::Cancel { .. } => "outbox cancel",
            },
            Self::Org { command, .. } => match command {
                OrgCommand::Init { .. } => "org init",
                OrgCommand::Certify { .. } => "org certify",
                OrgCommand::Revoke { .. } => "org revoke",
                OrgCommand::PublishRevocations { .. } => "org publish-revocations",
                OrgCommand::ArchivePolicy { .. } => "org archive-policy",
                OrgCommand::PublishArchivePolicy { .. } => "org publish-archive-policy",
                OrgCommand::SetRelay { .. } => "org set-relay",
                OrgCommand::Link { .. } => "org link",
                OrgCommand::Show { .. } => "org show",
                OrgCommand::SignState => "org sign-state",
            },
            Self::Certificate { command } => match command {
                CertificateCommand::Request => "certificate request",
                CertificateCommand::Install { .. } => "certificate install",
                CertificateCommand::Show => "certificate show",
            },
            Self::Clinic { command } => match command {
                ClinicCommand::Add { .. } => "clinic add",
                ClinicCommand::Show => "clinic show",
            },
            Self::Devices { command } => match command {
                DevicesCommand::Link { .. } => "devices link",
                DevicesCommand::List => "devices list",
                DevicesCommand::Remove { .. } => "devices remove",
            },
            Self::Wipe { .. } => "wipe",
            Self::OpenConversation { .. } => "open-conversation",
            Self::OnDuty { .. } => "on-duty",
            Self::Queue { .. } => "queue",
            Self::Claim { .. } => "claim",
            Self::Members { .. } => "members",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Handoff { .. } => "handoff",
            Self::Archive { .. } => "archive",
            Self::Recall { .. } => "recall",
            Self::Conversations => "conversations",
            Self::LegalHold { .. } => "legal-hold",
            Self::Retention { .. } => "retention",
            Self::Backup { .. } => "backup",
            Self::Restore { .. } => "restore",
        }
    }
}

/// `on` or `off`; anything else is refused with the input shown escaped, and only so (clap's
/// own value check quotes the input itself, with bidirectional characters raw).
pub(crate) fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!(
            "expected `on` or `off`, not {}",
            crate::display::escape(&other.chars().take(40).collect::<String>())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every `--help` of every command and subcommand, as clap renders it.
    fn all_help(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        let name = format!("{path} {}", cmd.get_name());
        out.push((name.clone(), cmd.render_long_help().to_string()));
        out.push((format!("{name} -h"), cmd.render_help().to_string()));
        for sub in cmd.get_subcommands_mut() {
            all_help(sub, &name, out);
        }
    }

    #[test]
    fn an_on_off_argument_is_refused_with_the_input_escaped() {
        assert_eq!(super::on_off("on"), Ok(true));
        assert_eq!(super::on_off("off"), Ok(false));
        let refused = super::on_off("\u{1b}]0;PWNED\u{7}\u{1b}[31mon").unwrap_err();
        assert!(
            !refused.contains('\u{1b}') && !refused.contains('\u{7}'),
            "{refused}"
        );
        assert!(super::on_off("ON").is_err());
    }

    #[test]
    fn no_help_text_contains_a_control_or_bidi_character() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut helps = Vec::new();
        all_help(&mut cmd, "", &mut helps);
        assert!(helps.len() > 10);
        for (name, text) in &helps {
            let bad: Vec<char> = text
                .chars()
                .filter(|&c| c != '\n' && crate::display::is_unsafe(c))
                .collect();
            assert!(bad.is_empty(), "{name}: {bad:?}");
        }
        let recv = helps
            .iter()
            .find(|(n, _)| n.ends_with(" recv"))
            .map(|(_, t)| t.as_str())
            .unwrap_or_default();
        assert!(recv.contains(r"(`\x1b`, `\u{202e}`)"), "{recv}");
    }

    /// Requests, certificates and revocation lists are base64url: one in 64 begins with `-`,
    /// which must be taken as the value it is, not as an unknown flag.
    #[test]
    fn base64url_values_beginning_with_a_hyphen_are_values() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("hushwire").chain(args.iter().copied()))
                .map_err(|e| e.to_string())
        };
        let cases: [&[&str]; 4] = [
            &[
                "org", "certify", "-Yab", "--name", "Ada", "--roles", "agent",
            ],
            &["certificate", "install", "-Yab"],
            &["org", "publish-revocations", "-Yab"],
            &[
                "register",
                "ws://127.0.0.1:1/v1/websocket",
                "--certificate",
                "-Yab",
                "--clinic",
                "x",
            ],
        ];
        for args in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(format!("{cli:?}").contains("\"-Yab\""), "{args:?}");
        }
    }
}
