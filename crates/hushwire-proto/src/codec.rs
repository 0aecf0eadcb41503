//! The explicit wire codec.
//!
//! Every Hushwire wire structure implements [`Codec`]: `encode` appends its bytes to a `Vec`, and
//! `read` consumes exactly its bytes from a [`Reader`]. Integers are big-endian. Variable-length
//! fields carry a length prefix whose maximum is part of the field's definition, so a hostile
//! length is refused before anything is allocated. `docs/wire-format.md` lists every layout.
//!
//! Decoding is total: any input yields `Ok` or a [`DecodeError`], never a panic.

use core::fmt;

/// Why untrusted bytes could not be decoded. Carries field names, never field contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended while `field` was being read.
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes remained after a complete `structure` was read.
    TrailingBytes {
        /// The structure that was complete.
        structure: &'static str,
    },
    /// A length prefix for `field` exceeded its maximum.
    TooLong {
        /// The length-prefixed field.
        field: &'static str,
        /// The length that was announced.
        len: usize,
        /// The largest length the field allows.
        max: usize,
    },
    /// The version byte is not one this implementation speaks.
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The message type byte is not known for this structure.
    UnknownType {
        /// The structure being decoded.
        structure: &'static str,
        /// The type byte found.
        tag: u8,
    },
    /// A field held a value outside its domain (for example a flag byte other than 0 or 1, or a
    /// public key that is not canonical or has small order).
    InvalidValue {
        /// The field whose value was refused.
        field: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { field } => write!(f, "input ended inside field `{field}`"),
            Self::TrailingBytes { structure } => {
                write!(f, "unexpected bytes after a complete {structure}")
            }
            Self::TooLong { field, len, max } => {
                write!(
                    f,
                    "field `{field}` announces {len} bytes, more than its maximum of {max}"
                )
            }
            Self::UnsupportedVersion { version } => {
                write!(f, "unsupported protocol version {version}")
            }
            Self::UnknownType { structure, tag } => {
                write!(f, "unknown type byte {tag:#04x} for {structure}")
            }
            Self::InvalidValue { field } => write!(f, "field `{field}` holds an invalid value"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over untrusted bytes. Every read is bounds-checked and names the field it reads, so
/// an error says where the input went wrong.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// How many bytes are left.
    pub fn left(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated { field });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Reads a presence flag: `0` is absent, `1` is present, anything else is refused so that
    /// every value has exactly one encoding.
    pub fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue { field }),
        }
    }

    /// Reads a `u32` length prefix, refuses it if it exceeds `max`, then takes that many bytes.
    pub fn bytes_u32(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(len, field)
    }

    /// The next `n` bytes (or fewer, if fewer are left) without consuming them.
    pub fn peek(&self, n: usize) -> &'a [u8] {
        self.buf.get(..n).unwrap_or(self.buf)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Succeeds only if nothing is left; `structure` names what was just read.
    pub fn expect_empty(&self, structure: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { structure })
        }
    }
}

/// Appends a `u32` length prefix and the bytes. Encoding does not check the field's maximum:
/// the core only builds values within their limits, and a hand-built value that exceeds one
/// encodes to bytes the decoder refuses.
pub fn put_bytes_u32(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A structure with one canonical byte encoding.
pub trait Codec: Sized {
    /// Name used in error messages.
    const NAME: &'static str;

    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads exactly one value from `r`.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// The encoding of `self` as a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a value that must span all of `bytes`: trailing data is an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let value = Self::read(&mut r)?;
        r.expect_empty(Self::NAME)?;
        Ok(value)
    }
}

/// Reads the `version ‖ type` header of a version-1 structure (relay frames, audit, transcripts).
pub fn read_header(
    r: &mut Reader<'_>,
    expected_type: u8,
    structure: &'static str,
) -> Result<(), DecodeError> {
    read_versioned_header(r, crate::labels::PROTOCOL_VERSION, expected_type, structure)
}

/// Reads a `version ‖ type` header, refusing any version but `expected_version` and any type
/// but `expected_type`.
pub fn read_versioned_header(
    r: &mut Reader<'_>,
    expected_version: u8,
    expected_type: u8,
    structure: &'static str,
) -> Result<(), DecodeError> {
    let version = r.u8("version")?;
    if version != expected_version {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let tag = r.u8("type")?;
    if tag != expected_type {
        return Err(DecodeError::UnknownType { structure, tag });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked_and_named() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a").unwrap(), 0x0102);
        assert_eq!(r.u32("b"), Err(DecodeError::Truncated { field: "b" }));
        // A failed read consumes nothing.
        assert_eq!(r.left(), 1);
        assert_eq!(
            r.expect_empty("s"),
            Err(DecodeError::TrailingBytes { structure: "s" })
        );
    }

    #[test]
    fn length_prefix_is_refused_before_allocating() {
        let mut input = u32::MAX.to_be_bytes().to_vec();
        input.push(0);
        let mut r = Reader::new(&input);
        assert_eq!(
            r.bytes_u32(16, "payload"),
            Err(DecodeError::TooLong {
                field: "payload",
                len: u32::MAX as usize,
                max: 16
            })
        );
    }

    #[test]
    fn flags_have_one_encoding() {
        assert_eq!(Reader::new(&[0]).flag("f"), Ok(false));
        assert_eq!(Reader::new(&[1]).flag("f"), Ok(true));
        assert_eq!(
            Reader::new(&[2]).flag("f"),
            Err(DecodeError::InvalidValue { field: "f" })
        );
    }
}
