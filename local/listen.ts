import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LoopbackServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface ListenOptions {
  /** Awaited on close after the open connections are dropped: the server's own clean-up (the S3 server's interrupted uploads remove their files). */
  afterDisconnect?: () => Promise<unknown>;
}

/**
 * Listen on loopback (port 0: a random free one). Close stops listening, drops open connections
 * too (keep-alive ones would hold it open) and is the same promise however often it is called.
 */
export async function listenOnLoopback(server: Server, port = 0, host = '127.0.0.1', opts: ListenOptions = {}): Promise<LoopbackServer> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actual = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actual}`,
    port: actual,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await opts.afterDisconnect?.();
        await closed;
      })()),
  };
}
