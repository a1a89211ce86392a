// Entry of the OpenPGP.js bundle: only what the page uses (symmetric, passphrase-based messages).
export { createMessage, encrypt, decrypt, readMessage, enums, config } from "openpgp";
