//! WXBizMsgCrypt: the callback encryption scheme of WeCom, byte-compatible with Tencent's SDKs.
//!
//! - The EncodingAESKey is 43 base64 characters; `base64(key + "=")` gives the 32-byte AES key.
//!   Tencent's keys carry non-zero trailing bits, so decoding is lenient about those bits and
//!   strict about everything else.
//! - AES-256-CBC with the first 16 key bytes as IV, PKCS#7 padding to a multiple of **32** bytes.
//! - Plaintext: `random(16) || u32be(len) || msg || receive_id`.
//! - Signature: `sha1(sorted(token, timestamp, nonce, encrypted).concat())` in lower-case hex.
//!
//! # Security
//! CBC carries no MAC: the SHA1 signature over the ciphertext is the only authenticity check.
//! Every entry point that takes ciphertext from the network ([`MsgCrypt::verify_url`],
//! [`MsgCrypt::decrypt`]) verifies the signature first, in constant time, so unsigned input
//! never reaches the padding check (no padding oracle).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use aes::cipher::{
    block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit, KeyIvInit,
};
use aes::Aes256Dec;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
/// CBC over a key's round keys, borrowed: the key schedule (960 bytes, the size of its
/// software fallback) is not copied for every callback, as a clone for an owned decryptor was.
type Aes256CbcDec<'k> = cbc::Decryptor<&'k Aes256Dec>;

/// WXBizMsgCrypt pads to 32 bytes, not to the AES block size.
const PAD_BLOCK: usize = 32;
/// Random prefix plus the 4-byte length field.
const HEADER_LEN: usize = 20;

/// What can go wrong in WXBizMsgCrypt; [`CryptoError::code`] gives the official number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The signature does not match (-40001).
    ValidateSignature,
    /// The XML envelope could not be parsed (-40002).
    ParseXml,
    /// The signature could not be computed (-40003).
    ComputeSignature,
    /// The EncodingAESKey is not 43 base64 characters decoding to 32 bytes (-40004).
    IllegalAesKey,
    /// The decrypted receive id is not the expected corp id (-40005).
    ValidateCorpId,
    /// Encryption failed (-40006).
    EncryptAes,
    /// Decryption failed: bad padding or ciphertext length (-40007).
    DecryptAes,
    /// The decrypted buffer is malformed: too short, or a length field out of range (-40008).
    IllegalBuffer,
    /// Base64 encoding failed (-40009).
    EncodeBase64,
    /// The ciphertext is not valid base64 (-40010).
    DecodeBase64,
    /// The reply XML could not be built (-40011).
    GenXml,
}

impl CryptoError {
    /// The error number of Tencent's WXBizMsgCrypt SDKs.
    pub fn code(self) -> i32 {
        match self {
            Self::ValidateSignature => -40001,
            Self::ParseXml => -40002,
            Self::ComputeSignature => -40003,
            Self::IllegalAesKey => -40004,
            Self::ValidateCorpId => -40005,
            Self::EncryptAes => -40006,
            Self::DecryptAes => -40007,
            Self::IllegalBuffer => -40008,
            Self::EncodeBase64 => -40009,
            Self::DecodeBase64 => -40010,
            Self::GenXml => -40011,
        }
    }
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::ValidateSignature => "signature mismatch",
            Self::ParseXml => "xml parse error",
            Self::ComputeSignature => "signature computation failed",
            Self::IllegalAesKey => "illegal encoding aes key",
            Self::ValidateCorpId => "receive id mismatch",
            Self::EncryptAes => "aes encryption failed",
            Self::DecryptAes => "aes decryption failed",
            Self::IllegalBuffer => "illegal decrypted buffer",
            Self::EncodeBase64 => "base64 encoding failed",
            Self::DecodeBase64 => "base64 decoding failed",
            Self::GenXml => "xml generation failed",
        };
        write!(f, "{what} ({})", self.code())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CryptoError {}

/// A decoded EncodingAESKey, with its decryption round keys expanded once (every callback
/// would otherwise expand them again). `Debug` never shows the key.
#[derive(Clone)]
pub struct EncodingAesKey {
    key: [u8; 32],
    dec: Aes256Dec,
}

impl PartialEq for EncodingAesKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for EncodingAesKey {}

impl EncodingAesKey {
    /// Decodes the 43-character key as shown in the WeCom admin console.
    pub fn parse(encoded: &str) -> Result<Self, CryptoError> {
        let encoded = encoded.trim();
        if encoded.len() != 43 || !encoded.bytes().all(is_base64_char) {
            return Err(CryptoError::IllegalAesKey);
        }
        // Tencent's keys have non-zero trailing bits and no padding: the forgiving decoder
        // (WHATWG's) discards the bits and wants no `=`; the characters are checked above.
        let bytes = base64_simd::forgiving_decode_to_vec(encoded.as_bytes())
            .map_err(|_| CryptoError::IllegalAesKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::IllegalAesKey)?;
        Ok(Self {
            dec: Aes256Dec::new(&key.into()),
            key,
        })
    }

    /// A short fingerprint to tell keys apart in output without showing them: the first 8
    /// hex digits of the key's SHA-256.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        to_hex(&Sha256::digest(self.key)[..4])
    }

    /// The raw 32-byte AES key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    fn iv(&self) -> &[u8] {
        &self.key[..16]
    }
}

impl fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncodingAesKey(<redacted>)")
    }
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// The signature WeCom puts in `msg_signature`: SHA1 over the sorted parts, lower-case hex.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypted: &str) -> String {
    to_hex(&signature_bytes(token, timestamp, nonce, encrypted))
}

fn signature_bytes(token: &str, timestamp: &str, nonce: &str, encrypted: &str) -> [u8; 20] {
    let mut parts = [token, timestamp, nonce, encrypted];
    // Byte order, as `str`'s. The parts usually differ in their first byte, which settles a
    // comparison without a call to `memcmp`.
    let less = |a: &str, b: &str| match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x < y,
        _ => a < b,
    };
    // Four parts: the five comparisons of a sorting network, inline, where the slice sort
    // calls out to its insertion sort.
    for (i, j) in [(0, 1), (2, 3), (0, 2), (1, 3), (1, 2)] {
        if less(parts[j], parts[i]) {
            parts.swap(i, j);
        }
    }
    let mut sha = Sha1::new();
    for part in parts {
        sha.update(part.as_bytes());
    }
    sha.finalize().into()
}

/// Checks `msg_signature` in constant time. Only lower-case hex matches, as in Tencent's SDKs.
pub fn verify_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypted: &str,
    msg_signature: &str,
) -> Result<(), CryptoError> {
    let expected = signature_bytes(token, timestamp, nonce, encrypted);
    let given = from_hex_20(msg_signature).ok_or(CryptoError::ValidateSignature)?;
    if bool::from(ct_eq_20(&expected, &given)) {
        Ok(())
    } else {
        Err(CryptoError::ValidateSignature)
    }
}

/// A decrypted payload before the receive id is checked: the one buffer the ciphertext was
/// decoded and decrypted into, read in place (no copy of the message or the receive id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The decrypted content: 16 random bytes, the message's length, the message, the
    /// receive id (the padding is cut off).
    buf: Vec<u8>,
    /// Where the message ends and the receive id starts.
    msg_end: usize,
}

impl Opened {
    /// The message: XML for callbacks, the echo string for URL verification.
    pub fn msg(&self) -> &[u8] {
        &self.buf[HEADER_LEN..self.msg_end]
    }

    /// The receive id appended by WeCom: the CorpID for self-built apps.
    pub fn receive_id(&self) -> &[u8] {
        &self.buf[self.msg_end..]
    }

    /// The buffer, and where the message is in it.
    pub fn into_parts(self) -> (Vec<u8>, core::ops::Range<usize>) {
        (self.buf, HEADER_LEN..self.msg_end)
    }

    /// The message, reusing the buffer.
    pub fn into_msg(mut self) -> Vec<u8> {
        self.buf.truncate(self.msg_end);
        self.buf.drain(..HEADER_LEN);
        self.buf
    }
}

/// Decrypts base64 ciphertext without checking any signature. Callers must verify the signature
/// first; see the module's security note.
pub fn open(key: &EncodingAesKey, encrypted_b64: &str) -> Result<Opened, CryptoError> {
    let mut buf = base64_simd::STANDARD
        .decode_to_vec(encrypted_b64.trim())
        .map_err(|_| CryptoError::DecodeBase64)?;
    let content_len = decrypt_unpad(key, &mut buf)?;
    if content_len < HEADER_LEN {
        return Err(CryptoError::IllegalBuffer);
    }
    let msg_len = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
    if msg_len > content_len - HEADER_LEN {
        return Err(CryptoError::IllegalBuffer);
    }
    buf.truncate(content_len);
    Ok(Opened {
        buf,
        msg_end: HEADER_LEN + msg_len,
    })
}

/// Strict 32-byte PKCS#7: the pad value is 1..=32 and every pad byte equals it.
fn unpad_len(buf: &[u8]) -> Result<usize, CryptoError> {
    let pad = *buf.last().ok_or(CryptoError::DecryptAes)? as usize;
    if pad == 0 || pad > PAD_BLOCK || pad > buf.len() {
        return Err(CryptoError::DecryptAes);
    }
    if buf[buf.len() - pad..].iter().any(|&b| b as usize != pad) {
        return Err(CryptoError::DecryptAes);
    }
    Ok(pad)
}

/// Decrypts an AI bot's medium (a picture, file or video behind its URL): the raw bytes,
/// AES-256-CBC with the bot's key and the IV of callbacks, strict 32-byte PKCS#7. No header,
/// no length, no receive id: the file itself.
pub fn open_media(key: &EncodingAesKey, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut buf = sealed.to_vec();
    let len = decrypt_unpad(key, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// Decrypts `buf` in place (AES-256-CBC, the key's IV) and returns the length of the content
/// before its strict 32-byte PKCS#7 padding.
fn decrypt_unpad(key: &EncodingAesKey, buf: &mut [u8]) -> Result<usize, CryptoError> {
    if buf.is_empty() || !buf.len().is_multiple_of(16) {
        return Err(CryptoError::DecryptAes);
    }
    let dec = Aes256CbcDec::inner_iv_slice_init(&key.dec, key.iv())
        .map_err(|_| CryptoError::IllegalAesKey)?;
    let plain_len = dec
        .decrypt_padded_mut::<NoPadding>(buf)
        .map_err(|_| CryptoError::DecryptAes)?
        .len();
    Ok(plain_len - unpad_len(&buf[..plain_len])?)
}

/// Encrypts a medium as [`open_media`] reads it (for the tests' stand-ins and the fuzzer).
pub fn seal_media(key: &EncodingAesKey, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    pad_encrypt(key, plain.to_vec())
}

/// Pads `buf` with 32-byte PKCS#7 and encrypts it (AES-256-CBC, the key's IV).
fn pad_encrypt(key: &EncodingAesKey, mut buf: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
    let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
    buf.resize(buf.len() + pad, pad as u8);
    let enc = Aes256CbcEnc::new_from_slices(key.as_bytes(), key.iv())
        .map_err(|_| CryptoError::IllegalAesKey)?;
    let len = buf.len();
    enc.encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .map_err(|_| CryptoError::EncryptAes)?;
    Ok(buf)
}

/// Encrypts `msg` for `receive_id` with the given 16 random bytes, returning base64.
pub fn seal(
    key: &EncodingAesKey,
    msg: &[u8],
    receive_id: &[u8],
    random: &[u8; 16],
) -> Result<String, CryptoError> {
    let msg_len = u32::try_from(msg.len()).map_err(|_| CryptoError::EncryptAes)?;
    let content_len = HEADER_LEN + msg.len() + receive_id.len();
    let mut buf = Vec::with_capacity(content_len + PAD_BLOCK);
    buf.extend_from_slice(random);
    buf.extend_from_slice(&msg_len.to_be_bytes());
    buf.extend_from_slice(msg);
    buf.extend_from_slice(receive_id);
    Ok(base64_simd::STANDARD.encode_to_string(pad_encrypt(key, buf)?))
}

/// One app's WXBizMsgCrypt: token, key and receive id (the CorpID).
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: EncodingAesKey,
    receive_id: String,
}

impl fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("token", &"<redacted>")
            .field("key", &self.key)
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

/// An encrypted passive reply, ready for [`crate::xml::encrypted_reply_xml`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Base64 ciphertext.
    pub encrypt: String,
    /// `msg_signature` over the ciphertext.
    pub signature: String,
    /// The timestamp that was signed.
    pub timestamp: String,
    /// The nonce that was signed.
    pub nonce: String,
}

impl MsgCrypt {
    /// Builds the crypt from the app's settings; fails on an illegal EncodingAESKey.
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            token: token.into(),
            key: EncodingAesKey::parse(encoding_aes_key)?,
            receive_id: receive_id.into(),
        })
    }

    /// The app's token (a secret: do not log it).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The decoded key.
    pub fn key(&self) -> &EncodingAesKey {
        &self.key
    }

    /// The receive id this crypt expects and writes (the CorpID).
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// Checks the signature only: one SHA1, no AES.
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
    ) -> Result<(), CryptoError> {
        verify_signature(&self.token, timestamp, nonce, encrypted, msg_signature)
    }

    /// Decrypts a signature-checked payload and checks its receive id.
    pub fn open_verified(&self, encrypted: &str) -> Result<Vec<u8>, CryptoError> {
        let opened = open(&self.key, encrypted)?;
        if opened.receive_id() != self.receive_id.as_bytes() {
            return Err(CryptoError::ValidateCorpId);
        }
        Ok(opened.into_msg())
    }

    /// Answers URL verification: returns the plaintext echo string to send back as-is.
    pub fn verify_url(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        echostr: &str,
    ) -> Result<String, CryptoError> {
        self.verify_signature(msg_signature, timestamp, nonce, echostr)?;
        let msg = self.open_verified(echostr)?;
        String::from_utf8(msg).map_err(|_| CryptoError::IllegalBuffer)
    }

    /// Verifies and decrypts the `<Encrypt>` text of a callback, returning the inner XML.
    pub fn decrypt(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
    ) -> Result<String, CryptoError> {
        self.verify_signature(msg_signature, timestamp, nonce, encrypted)?;
        let msg = self.open_verified(encrypted)?;
        String::from_utf8(msg).map_err(|_| CryptoError::IllegalBuffer)
    }

    /// Encrypts and signs `msg`. The caller supplies the randomness, timestamp and nonce.
    pub fn encrypt(
        &self,
        msg: &str,
        random: &[u8; 16],
        timestamp: &str,
        nonce: &str,
    ) -> Result<Sealed, CryptoError> {
        let encrypt = seal(
            &self.key,
            msg.as_bytes(),
            self.receive_id.as_bytes(),
            random,
        )?;
        let signature = signature(&self.token, timestamp, nonce, &encrypt);
        Ok(Sealed {
            encrypt,
            signature,
            timestamp: timestamp.into(),
            nonce: nonce.into(),
        })
    }
}

/// Lower-case hex digits, by value: what signatures are written in and read from.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX_DIGITS[(b >> 4) as usize] as char);
        out.push(HEX_DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Two digests compared in constant time, as three words (`subtle` compares a byte slice a
/// byte at a time, each through an optimization barrier).
fn ct_eq_20(a: &[u8; 20], b: &[u8; 20]) -> subtle::Choice {
    let words = |d: &[u8; 20]| {
        let (head, tail) = d.split_at(16);
        let (lo, hi) = head.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        (
            word(lo),
            word(hi),
            u32::from_le_bytes(tail.try_into().expect("4 bytes")),
        )
    };
    let (a, b) = (words(a), words(b));
    a.0.ct_eq(&b.0) & a.1.ct_eq(&b.1) & a.2.ct_eq(&b.2)
}

/// Lower-case hex only, as Tencent's SDKs compare it: `ABCD…` or ` abcd…` is not a signature.
/// Read through a table with no branch per digit: a signature's digits are random, and a
/// branch on each (digit or letter) was mispredicted often enough to cost more than the
/// rest of the check outside SHA1.
fn from_hex_20(s: &str) -> Option<[u8; 20]> {
    let s: &[u8; 40] = s.as_bytes().try_into().ok()?;
    let mut out = [0u8; 20];
    let mut invalid = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        invalid |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (invalid & 0xf0 == 0).then_some(out)
}

/// Each byte's value as a lower-case hex digit, or `0xff`.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX_DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use alloc::vec;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A digest differs from another wherever one byte differs, whichever byte and bit.
    #[test]
    fn digests_compare_by_every_byte() {
        let a: [u8; 20] = core::array::from_fn(|i| i as u8 * 13);
        assert!(bool::from(ct_eq_20(&a, &a)));
        for i in 0..20 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!bool::from(ct_eq_20(&a, &b)), "byte {i}, bit {bit}");
            }
        }
    }

    #[test]
    fn official_vectors_verify_url() {
        for set in vectors() {
            let crypt = MsgCrypt::new(&set.token, &set.encoding_aes_key, &set.corp_id).unwrap();
            let v = &set.verify_url;
            assert_eq!(
                signature(&set.token, &v.timestamp, &v.nonce, &v.echostr),
                v.msg_signature,
                "{}",
                set.name
            );
            let body = crypt
                .verify_url(&v.msg_signature, &v.timestamp, &v.nonce, &v.echostr)
                .unwrap();
            assert_eq!(body, v.expected_body, "{}", set.name);
        }
    }

    #[test]
    fn official_vectors_callback_and_pad_lengths() {
        for set in vectors() {
            let crypt = MsgCrypt::new(&set.token, &set.encoding_aes_key, &set.corp_id).unwrap();
            let c = &set.callback;
            let encrypt = crate::xml::parse_envelope(&c.body)
                .unwrap()
                .encrypt
                .into_owned();
            let plain = crypt
                .decrypt(&c.msg_signature, &c.timestamp, &c.nonce, &encrypt)
                .unwrap();
            assert_eq!(plain, c.expected_plaintext, "{}", set.name);
            for (cipher, pad_len) in [
                (&encrypt, c.pad_len),
                (&set.verify_url.echostr, set.verify_url.pad_len),
            ] {
                let mut raw = STANDARD.decode(cipher).unwrap();
                cbc::Decryptor::<Aes256Dec>::new_from_slices(
                    crypt.key().as_bytes(),
                    crypt.key().iv(),
                )
                .unwrap()
                .decrypt_padded_mut::<NoPadding>(&mut raw)
                .unwrap();
                assert_eq!(*raw.last().unwrap() as usize, pad_len, "{}", set.name);
            }
        }
    }

    #[test]
    fn official_keys_need_lenient_trailing_bits() {
        for set in vectors() {
            assert!(STANDARD
                .decode(alloc::format!("{}=", set.encoding_aes_key))
                .is_err());
            assert!(EncodingAesKey::parse(&set.encoding_aes_key).is_ok());
        }
    }

    #[test]
    fn encrypt_reproduces_official_ciphertext_given_its_random_prefix() {
        for set in vectors() {
            let crypt = MsgCrypt::new(&set.token, &set.encoding_aes_key, &set.corp_id).unwrap();
            let c = &set.callback;
            let encrypt = crate::xml::parse_envelope(&c.body).unwrap().encrypt;
            let mut raw = STANDARD.decode(encrypt.as_bytes()).unwrap();
            cbc::Decryptor::<Aes256Dec>::new_from_slices(crypt.key().as_bytes(), crypt.key().iv())
                .unwrap()
                .decrypt_padded_mut::<NoPadding>(&mut raw)
                .unwrap();
            let random: [u8; 16] = raw[..16].try_into().unwrap();
            let sealed = crypt
                .encrypt(&c.expected_plaintext, &random, &c.timestamp, &c.nonce)
                .unwrap();
            assert_eq!(sealed.encrypt, encrypt, "{}", set.name);
            assert_eq!(sealed.signature, c.msg_signature, "{}", set.name);
        }
    }

    #[test]
    fn key_errors() {
        assert_eq!(
            EncodingAesKey::parse("short"),
            Err(CryptoError::IllegalAesKey)
        );
        assert_eq!(
            EncodingAesKey::parse(&"!".repeat(43)),
            Err(CryptoError::IllegalAesKey)
        );
        assert_eq!(
            EncodingAesKey::parse(&"a".repeat(44)),
            Err(CryptoError::IllegalAesKey)
        );
        let k = EncodingAesKey::parse(&"a".repeat(43)).unwrap();
        assert_eq!(alloc::format!("{k:?}"), "EncodingAesKey(<redacted>)");
    }

    #[test]
    fn tampering_is_rejected_with_the_right_codes() {
        let crypt = MsgCrypt::new("tok", &"k".repeat(43), "corp").unwrap();
        let sealed = crypt.encrypt("hello", &[7; 16], "1", "n").unwrap();
        assert_eq!(
            crypt
                .decrypt(&sealed.signature, "1", "n", &sealed.encrypt)
                .unwrap(),
            "hello"
        );
        // Wrong signature, wrong timestamp, malformed hex.
        assert_eq!(
            crypt.decrypt(&"0".repeat(40), "1", "n", &sealed.encrypt),
            Err(CryptoError::ValidateSignature)
        );
        assert_eq!(
            crypt.decrypt(&sealed.signature, "2", "n", &sealed.encrypt),
            Err(CryptoError::ValidateSignature)
        );
        assert_eq!(
            crypt.decrypt("zz", "1", "n", &sealed.encrypt),
            Err(CryptoError::ValidateSignature)
        );
        // Upper-case hex or padding is not the signature, as in Tencent's SDKs.
        let upper = sealed.signature.to_ascii_uppercase();
        assert_eq!(
            crypt.decrypt(&upper, "1", "n", &sealed.encrypt),
            Err(CryptoError::ValidateSignature)
        );
        let padded = alloc::format!(" {}", sealed.signature);
        assert_eq!(
            crypt.decrypt(&padded, "1", "n", &sealed.encrypt),
            Err(CryptoError::ValidateSignature)
        );
        // Another corp's crypt with the same key: signature passes, receive id does not.
        let other = MsgCrypt::new("tok", &"k".repeat(43), "other").unwrap();
        assert_eq!(
            other.decrypt(&sealed.signature, "1", "n", &sealed.encrypt),
            Err(CryptoError::ValidateCorpId)
        );
        // Signed garbage: bad base64, bad length, bad padding.
        for (bad, code) in [("%%%", -40010), ("AAAA", -40007)] {
            let sig = signature("tok", "1", "n", bad);
            assert_eq!(crypt.decrypt(&sig, "1", "n", bad).unwrap_err().code(), code);
        }
    }

    #[test]
    fn strict_padding_and_buffer_checks() {
        let key = EncodingAesKey::parse(&"k".repeat(43)).unwrap();
        let encrypt_raw = |plain: &[u8]| {
            let mut buf = plain.to_vec();
            let len = buf.len();
            Aes256CbcEnc::new_from_slices(key.as_bytes(), key.iv())
                .unwrap()
                .encrypt_padded_mut::<NoPadding>(&mut buf, len)
                .unwrap();
            STANDARD.encode(&buf)
        };
        // Pad byte 0, pad byte 33, inconsistent pad bytes.
        let mut zero = vec![0u8; 32];
        zero[31] = 0;
        assert_eq!(
            open(&key, &encrypt_raw(&zero)),
            Err(CryptoError::DecryptAes)
        );
        assert_eq!(
            open(&key, &encrypt_raw(&[33u8; 64])),
            Err(CryptoError::DecryptAes)
        );
        let mut mixed = vec![4u8; 32];
        mixed[29] = 5;
        assert_eq!(
            open(&key, &encrypt_raw(&mixed)),
            Err(CryptoError::DecryptAes)
        );
        // Valid padding but shorter than the 20-byte header.
        assert_eq!(
            open(&key, &encrypt_raw(&[16u8; 32])),
            Err(CryptoError::IllegalBuffer)
        );
        // Length field larger than what follows.
        let mut long = vec![0u8; 32];
        long[16..20].copy_from_slice(&100u32.to_be_bytes());
        long[20..].fill(12);
        assert_eq!(
            open(&key, &encrypt_raw(&long)),
            Err(CryptoError::IllegalBuffer)
        );
    }

    #[test]
    fn every_pad_length_round_trips() {
        let crypt = MsgCrypt::new("tok", &"Z".repeat(43), "ww1").unwrap();
        // content = 20 + len + 3; covering 32 consecutive lengths covers every pad 1..=32.
        let mut seen = [false; 33];
        for len in 0..64 {
            let msg = "x".repeat(len);
            let sealed = crypt.encrypt(&msg, &[len as u8; 16], "t", "n").unwrap();
            seen[PAD_BLOCK - (HEADER_LEN + len + 3) % PAD_BLOCK] = true;
            assert_eq!(
                crypt
                    .decrypt(&sealed.signature, "t", "n", &sealed.encrypt)
                    .unwrap(),
                msg
            );
        }
        assert!(seen[1..].iter().all(|&s| s));
    }

    #[test]
    fn random_prefix_may_be_any_bytes() {
        let crypt = MsgCrypt::new("tok", &"Z".repeat(43), "ww1").unwrap();
        let sealed = crypt.encrypt("你好", &[0xff; 16], "t", "n").unwrap();
        assert_eq!(
            crypt
                .decrypt(&sealed.signature, "t", "n", &sealed.encrypt)
                .unwrap(),
            "你好"
        );
    }

    #[test]
    fn signatures_are_forty_lower_case_hex_digits() {
        let digest: [u8; 20] = core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
        let hex = to_hex(&digest);
        assert_eq!(from_hex_20(&hex), Some(digest));
        // Every byte in every place of a pair: only 0-9 and a-f read, as what they say.
        for at in [0, 1, 38, 39] {
            for b in 0..=u8::MAX {
                let mut s = hex.clone().into_bytes();
                s[at] = b;
                let value = match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'a'..=b'f' => Some(b - b'a' + 10),
                    _ => None,
                };
                let read = core::str::from_utf8(&s).ok().and_then(from_hex_20);
                let want = value.map(|v| {
                    let mut d = digest;
                    let shift = if at % 2 == 0 { 4 } else { 0 };
                    d[at / 2] = (d[at / 2] & !(0x0f << shift)) | (v << shift);
                    d
                });
                assert_eq!(read, want, "byte {b:#04x} at {at}");
            }
        }
        for bad in [
            "",
            &hex[..39],
            &alloc::format!("{hex}0"),
            &hex.to_uppercase(),
        ] {
            assert_eq!(from_hex_20(bad), None, "{bad:?}");
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The signature sorts its parts as `str`'s order does, whatever their first bytes
        /// share: empty parts, equal parts, a part that begins another.
        #[test]
        fn the_signature_sorts_as_str_does(
            parts in prop::array::uniform4("|1|12|123|2|a|ab|b|B|z9|\\+|[0-9a-zA-Z+/=]{0,12}"),
        ) {
            let mut sorted = parts.clone();
            sorted.sort();
            let expected: [u8; 20] = Sha1::digest(sorted.concat().as_bytes()).into();
            let [a, b, c, d] = &parts;
            prop_assert_eq!(signature_bytes(a, b, c, d), expected);
        }

        #[test]
        fn round_trips_any_payload(
            msg in prop::collection::vec(any::<u8>(), 0..=5000),
            random in any::<[u8; 16]>(),
            receive_id in "[a-zA-Z0-9]{1,32}",
        ) {
            let key = EncodingAesKey::parse("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
            let sealed = seal(&key, &msg, receive_id.as_bytes(), &random).unwrap();
            let raw_len = STANDARD.decode(&sealed).unwrap().len();
            prop_assert_eq!(raw_len % PAD_BLOCK, 0);
            let opened = open(&key, &sealed).unwrap();
            prop_assert_eq!(opened.msg(), &msg[..]);
            prop_assert_eq!(opened.receive_id(), receive_id.as_bytes());
        }

        /// The ciphertext's decoder (base64-simd) accepts and refuses exactly what the
        /// `base64` crate's strict standard engine does: padding, trailing bits, stray
        /// characters and all.
        #[test]
        fn the_simd_decoder_agrees_with_the_base64_crate(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..4,
            noise in "[A-Za-z0-9+/=]{0,6}|[ \\n_\\-.=]{0,3}",
            at in any::<prop::sample::Index>(),
        ) {
            let good = STANDARD.encode(&bytes);
            // Cut from the end, then noise inserted anywhere (base64 is ASCII: any index is a
            // boundary).
            let mut text = String::from(&good[..good.len().saturating_sub(cut)]);
            text.insert_str(at.index(text.len() + 1), &noise);
            for candidate in [good.as_str(), text.as_str()] {
                let simd = base64_simd::STANDARD.decode_to_vec(candidate).ok();
                prop_assert_eq!(&simd, &STANDARD.decode(candidate).ok(), "{:?}", candidate);
            }
            prop_assert_eq!(base64_simd::STANDARD.encode_to_string(&bytes), good);
        }

        /// EncodingAESKeys decode as the `base64` crate decodes them when told to allow
        /// trailing bits and either padding: every 43-character key of the alphabet.
        #[test]
        fn keys_decode_as_the_lenient_base64_engine_decodes_them(
            key in "[A-Za-z0-9+/]{43}",
        ) {
            use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
            const LENIENT: GeneralPurpose = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            let expected: [u8; 32] = LENIENT.decode(&key).unwrap().try_into().unwrap();
            let parsed = EncodingAesKey::parse(&key).unwrap();
            prop_assert_eq!(parsed.as_bytes(), &expected);
        }

        #[test]
        fn every_pad_length_round_trips_through_msgcrypt(len in 0usize..=5000, pad_target in 1usize..=32) {
            // Choose a length whose padding is exactly pad_target.
            let base = HEADER_LEN + 3; // receive id "ww1"
            let mut len = len;
            while PAD_BLOCK - (base + len) % PAD_BLOCK != pad_target { len += 1; }
            let crypt = MsgCrypt::new("tok", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt", "ww1").unwrap();
            let msg: String = core::iter::repeat_n('字', len / 3).chain(core::iter::repeat_n('a', len % 3)).collect();
            let sealed = crypt.encrypt(&msg, &[9; 16], "1", "n").unwrap();
            prop_assert_eq!(crypt.decrypt(&sealed.signature, "1", "n", &sealed.encrypt).unwrap(), msg);
        }

        #[test]
        fn garbage_never_panics(garbage in "[A-Za-z0-9+/=]{0,200}") {
            let crypt = MsgCrypt::new("tok", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt", "ww1").unwrap();
            let sig = signature("tok", "1", "n", &garbage);
            let _ = crypt.decrypt(&sig, "1", "n", &garbage);
        }
    }

    #[test]
    fn bot_media_round_trip_and_refuse_tampering() {
        let key = EncodingAesKey::parse("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
        for len in [0, 1, 31, 32, 33, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = seal_media(&key, &plain).unwrap();
            assert_eq!(sealed.len() % 32, 0);
            assert_eq!(open_media(&key, &sealed).unwrap(), plain);
        }
        let mut sealed = seal_media(&key, b"a picture").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(open_media(&key, &sealed).is_err());
        assert!(open_media(&key, &sealed[..15]).is_err());
        assert!(open_media(&key, &[]).is_err());
    }
}
