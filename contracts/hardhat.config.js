// Minimal Hardhat 2 config for the local test chain the integration tests start:
//   npx hardhat node --config contracts/hardhat.config.js --hostname 127.0.0.1 --port 8545
// Nothing is compiled by Hardhat (contracts/compile.js does that with the pinned solc), so the
// config only fixes the chain. The accounts are Hardhat's well-known public test accounts.
"use strict";

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  defaultNetwork: "hardhat",
  networks: {
    hardhat: {
      chainId: 31337,
      // Mine each transaction at once, as the tests expect a receipt right after sending.
      mining: { auto: true },
    },
  },
  paths: {
    root: __dirname,
    sources: "hardhat-sources",
    cache: "../node_modules/.cache/hardhat",
    artifacts: "../node_modules/.cache/hardhat-artifacts",
  },
};
