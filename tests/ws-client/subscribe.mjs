// Reference client for corebank's /graphql/ws, driven by
// api/tests/subscriptions.rs: the graphql-ws library (graphql-transport-ws
// subprotocol) exactly as a web or mobile frontend would use it.
//
//   node subscribe.mjs <ws-url> <accessToken> <accountId> <count>
//
// Prints `{"ready":true}` once the server acknowledged connection_init,
// then each balanceChanged event as one JSON line on stdout. Exits 0 after
// <count> events; 1 on any error, on an early close, or after 30 s.

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, token, accountId, countArg] = process.argv.slice(2);
const count = Number.parseInt(countArg ?? '', 10);
if (!url || !token || !accountId || !Number.isInteger(count) || count < 1) {
  console.error('usage: node subscribe.mjs <ws-url> <accessToken> <accountId> <count>');
  process.exit(2);
}

function fail(message) {
  console.error(`subscribe.mjs: ${message}`);
  process.exit(1);
}

const timer = setTimeout(() => fail(`timed out after 30 s waiting for ${count} event(s)`), 30_000);

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  lazy: false,
  retryAttempts: 0,
  on: {
    connected: () => {
      console.log(JSON.stringify({ ready: true }));
    },
    closed: (event) => {
      if (seen < count) {
        fail(`socket closed before ${count} event(s): code ${event?.code} reason ${JSON.stringify(event?.reason ?? '')}`);
      }
    },
    error: (error) => {
      fail(`connection error: ${error?.message ?? String(error)}`);
    },
  },
});

let seen = 0;
const query = `subscription B($id: ID!) {
  balanceChanged(accountId: $id) { accountId balance availableBalance transferId at version }
}`;

client.subscribe(
  { query, variables: { id: accountId } },
  {
    next: (result) => {
      if (result.errors) {
        fail(`errors: ${JSON.stringify(result.errors)}`);
      }
      console.log(JSON.stringify(result.data.balanceChanged));
      seen += 1;
      if (seen >= count) {
        clearTimeout(timer);
        client.dispose();
        // Stdout is flushed before exit for pipes written with console.log
        // in Node (synchronous on pipes for POSIX), so exiting now is safe.
        process.exit(0);
      }
    },
    error: (error) => {
      const text = Array.isArray(error)
        ? JSON.stringify(error)
        : error?.message ?? (error?.code !== undefined ? `close ${error.code} ${error.reason}` : String(error));
      fail(`subscription error: ${text}`);
    },
    complete: () => {
      if (seen < count) {
        fail(`subscription completed after ${seen} of ${count} event(s)`);
      }
    },
  },
);
