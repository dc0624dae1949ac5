"""A real WeCom-side peer for the behaviour suite, built on wechatpy from PyPI.

It speaks JSON lines on stdin/stdout, one request per line, one answer per line:
  {"op": "encrypt_callback", token, key, corp_id, agent_id, plaintext, timestamp, nonce}
      -> {"query", "body", "encrypt", "signature"}   what WeCom POSTs to the callback URL
  {"op": "verify_url_request", token, key, corp_id, echo, timestamp, nonce}
      -> {"query", "echostr", "signature"}            what WeCom GETs to verify the URL
  {"op": "decrypt", token, key, corp_id, encrypt, signature, timestamp, nonce}
      -> {"plaintext"} or {"error"}                   how a WeCom client reads a passive reply
  {"op": "bot_callback", token, key, plaintext, timestamp, nonce}
      -> {"query", "body"}                            what WeCom POSTs to an AI bot (JSON, receive id "")
  {"op": "bot_verify_url", token, key, echo, timestamp, nonce}
      -> {"query"}                                    what WeCom GETs to verify an AI bot's URL
  {"op": "bot_open_reply", token, key, body}
      -> {"plaintext", "timestamp", "nonce"} or {"error"}   how WeCom reads an AI bot's passive reply
  {"op": "bot_seal_media", key, data}          (data base64)
      -> {"sealed"}  (base64)                   an AI bot's medium as WeCom serves it: AES-256-CBC,
                                                IV = key[:16], PKCS#7 padded to 32 bytes
Errors never end the process: they come back as {"error": "..."}.
"""
import base64
import json
import sys
import urllib.parse

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.crypto import _get_signature
import xmltodict


def cdata(s):
    return "<![CDATA[" + s.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def encrypt_callback(r):
    crypto = WeChatCrypto(r["token"], r["key"], r["corp_id"])
    reply = crypto.encrypt_message(r["plaintext"], r["nonce"], r["timestamp"])
    doc = xmltodict.parse(reply)["xml"]
    encrypt, signature = doc["Encrypt"], doc["MsgSignature"]
    body = (
        "<xml><ToUserName>" + cdata(r["corp_id"]) + "</ToUserName><Encrypt>" + cdata(encrypt)
        + "</Encrypt><AgentID>" + cdata(str(r["agent_id"])) + "</AgentID></xml>"
    )
    query = urllib.parse.urlencode(
        {"msg_signature": signature, "timestamp": r["timestamp"], "nonce": r["nonce"]}
    )
    return {"query": query, "body": body, "encrypt": encrypt, "signature": signature}


def verify_url_request(r):
    crypto = WeChatCrypto(r["token"], r["key"], r["corp_id"])
    echostr = PrpCrypto(crypto.key).encrypt(r["echo"], r["corp_id"]).decode()
    signature = _get_signature(r["token"], r["timestamp"], r["nonce"], echostr)
    query = urllib.parse.urlencode(
        {"msg_signature": signature, "timestamp": r["timestamp"], "nonce": r["nonce"], "echostr": echostr}
    )
    # Round-trip through wechatpy's own check, as a sanity check of the peer itself.
    assert crypto.check_signature(signature, r["timestamp"], r["nonce"], echostr) == r["echo"]
    return {"query": query, "echostr": echostr, "signature": signature}


def decrypt(r):
    crypto = WeChatCrypto(r["token"], r["key"], r["corp_id"])
    plaintext = crypto.decrypt_message(
        {"Encrypt": r["encrypt"]}, r["signature"], r["timestamp"], r["nonce"]
    )
    return {"plaintext": plaintext}


def bot_prp(r):
    return PrpCrypto(WeChatCrypto(r["token"], r["key"], "").key)


def bot_callback(r):
    # The AI bot's scheme: the same AES and signature, receive id "", JSON instead of XML.
    encrypt = bot_prp(r).encrypt(r["plaintext"], "").decode()
    signature = _get_signature(r["token"], r["timestamp"], r["nonce"], encrypt)
    query = urllib.parse.urlencode(
        {"msg_signature": signature, "timestamp": r["timestamp"], "nonce": r["nonce"]}
    )
    return {"query": query, "body": json.dumps({"encrypt": encrypt})}


def bot_verify_url(r):
    echostr = bot_prp(r).encrypt(r["echo"], "").decode()
    signature = _get_signature(r["token"], r["timestamp"], r["nonce"], echostr)
    query = urllib.parse.urlencode(
        {"msg_signature": signature, "timestamp": r["timestamp"], "nonce": r["nonce"], "echostr": echostr}
    )
    return {"query": query}


def bot_open_reply(r):
    reply = json.loads(r["body"])
    timestamp, nonce = str(reply["timestamp"]), reply["nonce"]
    expected = _get_signature(r["token"], timestamp, nonce, reply["encrypt"])
    if expected != reply["msgsignature"]:
        raise ValueError("the reply's msgsignature does not verify")
    plaintext = bot_prp(r).decrypt(reply["encrypt"], "")
    return {"plaintext": plaintext, "timestamp": timestamp, "nonce": nonce}


def bot_seal_media(r):
    # Written from the protocol's description, not from the relay's code.
    key = base64.b64decode(r["key"] + "=")
    data = base64.b64decode(r["data"])
    pad = 32 - len(data) % 32
    data += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    sealed = enc.update(data) + enc.finalize()
    return {"sealed": base64.b64encode(sealed).decode()}


OPS = {
    "encrypt_callback": encrypt_callback,
    "verify_url_request": verify_url_request,
    "decrypt": decrypt,
    "bot_callback": bot_callback,
    "bot_verify_url": bot_verify_url,
    "bot_open_reply": bot_open_reply,
    "bot_seal_media": bot_seal_media,
}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            out = OPS[req["op"]](req)
        except Exception as e:  # the peer reports, the test decides
            out = {"error": type(e).__name__ + ": " + str(e)}
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
