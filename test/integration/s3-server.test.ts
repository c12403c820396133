import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { request } from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { startS3Server, type S3Server } from '../../local/s3/server';

const BUCKET = 'ferry-test';

const clientFor = (server: S3Server, extra: Partial<S3ClientConfig> = {}) =>
  new S3Client({
    endpoint: server.url,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    ...extra,
  });

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function getBytes(s3: S3Client, key: string, bucket = BUCKET): Promise<Buffer> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

/** The error an SDK call throws, by name. */
async function errorName(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).name;
  }
  throw new Error('expected the call to fail');
}

describe('local S3 server (in memory)', () => {
  let server: S3Server;
  let s3: S3Client;

  beforeAll(async () => {
    server = await startS3Server({ buckets: [BUCKET] });
    s3 = clientFor(server);
  });
  afterAll(async () => {
    s3.destroy();
    await server.close();
  });

  test('put, get and head an object with metadata', async () => {
    const put = await s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: 'tasks/t-1/result.json',
        Body: '{"ok":true}',
        ContentType: 'application/json',
        Metadata: { codec: 'json', 'task-id': 't-1' },
      }),
    );
    expect(put.ETag).toBe(`"${createHash('md5').update('{"ok":true}').digest('hex')}"`);

    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'tasks/t-1/result.json' }));
    expect(await got.Body!.transformToString()).toBe('{"ok":true}');
    expect(got.ContentType).toBe('application/json');
    expect(got.ContentLength).toBe(11);
    expect(got.ETag).toBe(put.ETag);
    expect(got.Metadata).toEqual({ codec: 'json', 'task-id': 't-1' });
    expect(got.LastModified).toBeInstanceOf(Date);

    const head = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'tasks/t-1/result.json' }));
    expect(head.ContentLength).toBe(11);
    expect(head.Metadata).toEqual({ codec: 'json', 'task-id': 't-1' });
  });

  test('a 20 MB object goes through intact', async () => {
    const body = randomBytes(20 * 1024 * 1024);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'big.bin', Body: body }));
    const got = await getBytes(s3, 'big.bin');
    expect(got.length).toBe(body.length);
    expect(sha256(got)).toBe(sha256(body));
  });

  test('streamed uploads use aws-chunked with a trailing CRC32, which is verified', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    const pieces = [body.subarray(0, 1_000_000), body.subarray(1_000_000, 2_500_000), body.subarray(2_500_000)];
    const put = await s3.send(
      new PutObjectCommand({ Bucket: BUCKET, Key: 'chunked-default.bin', Body: Readable.from(pieces), ContentLength: body.length }),
    );
    expect(put.ChecksumCRC32).toBeDefined();
    expect(sha256(await getBytes(s3, 'chunked-default.bin'))).toBe(sha256(body));
    // The stored checksum comes back with the object (the SDK validates it on read).
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'chunked-default.bin', ChecksumMode: 'ENABLED' }));
    expect(got.ChecksumCRC32).toBe(put.ChecksumCRC32);
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(body));
    // Checksums other than CRC32 are refused, not stored unchecked.
    const sha = new PutObjectCommand({
      Bucket: BUCKET,
      Key: 'sha256.bin',
      Body: Readable.from(pieces),
      ContentLength: body.length,
      ChecksumAlgorithm: 'SHA256',
    });
    expect(await errorName(s3.send(sha))).toBe('NotImplemented');
    expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'sha256.bin' })))).toBe('NotFound');
  });

  test('a CRC32C checksum, in a header or a trailer, answers NotImplemented and stores nothing', async () => {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'crc32c/kept.txt', Body: 'before' }));
    const body = randomBytes(1024 * 1024 + 5);
    // Each attempt's input, made anew for each request (a stream is read once).
    const attempts = {
      // A body of known bytes: the SDK sends the checksum it computed in x-amz-checksum-crc32c.
      header: () => ({ Body: body }),
      // A stream: aws-chunked, the checksum in a trailer.
      trailer: () => ({ Body: Readable.from([body.subarray(0, 300_000), body.subarray(300_000)]), ContentLength: body.length }),
      // A value the caller gives: refused for its algorithm before any digest is compared.
      given: () => ({ Body: 'data', ChecksumCRC32C: 'AAAAAA==' }),
    };
    for (const [name, input] of Object.entries(attempts)) {
      for (const Key of [`crc32c/${name}.bin`, 'crc32c/kept.txt']) {
        const put = new PutObjectCommand({ Bucket: BUCKET, Key, ChecksumAlgorithm: 'CRC32C', ...input() });
        expect(await errorName(s3.send(put))).toBe('NotImplemented');
      }
      expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `crc32c/${name}.bin` })))).toBe('NotFound');
    }
    expect(String(await getBytes(s3, 'crc32c/kept.txt'))).toBe('before');
  });

  test('aws-chunked: a right trailing CRC32 is kept, a wrong one is BadDigest; CRC32C and signed chunks are not implemented', async () => {
    const chunked = (key: string, trailer: string, body: string) =>
      fetch(`${server.url}/${BUCKET}/${key}`, {
        method: 'PUT',
        headers: {
          'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
          'content-encoding': 'aws-chunked',
          'x-amz-decoded-content-length': '11',
          'x-amz-trailer': trailer,
        },
        body,
      });
    // CRC32("hello world") = 0x0d4a1185, CRC32C("hello world") = 0xc99465aa.
    const good = await chunked(
      'crc32.txt',
      'x-amz-checksum-crc32',
      '5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n',
    );
    expect(good.status).toBe(200);
    expect(good.headers.get('x-amz-checksum-crc32')).toBe('DUoRhQ==');
    expect(await getBytes(s3, 'crc32.txt').then(String)).toBe('hello world');
    const oneChunk = await chunked(
      'crc32-one-chunk.txt',
      'x-amz-checksum-crc32',
      'b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n',
    );
    expect(oneChunk.status).toBe(200);

    const bad = await chunked('bad-crc32.txt', 'x-amz-checksum-crc32', 'b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n');
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('<Code>BadDigest</Code>');
    expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'bad-crc32.txt' })))).toBe('NotFound');

    const crc32c = await chunked('crc32c.txt', 'x-amz-checksum-crc32c', 'b\r\nhello world\r\n0\r\nx-amz-checksum-crc32c:yZRlqg==\r\n\r\n');
    expect(crc32c.status).toBe(501);
    expect(await crc32c.text()).toContain('<Code>NotImplemented</Code>');
    expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'crc32c.txt' })))).toBe('NotFound');

    const sig = 'a'.repeat(64);
    const signed = await fetch(`${server.url}/${BUCKET}/signed.txt`, {
      method: 'PUT',
      headers: {
        'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
        'content-encoding': 'aws-chunked',
        'x-amz-decoded-content-length': '5',
      },
      body: `5;chunk-signature=${sig}\r\nhello\r\n0;chunk-signature=${sig}\r\n\r\n`,
    });
    expect(signed.status).toBe(501);
    expect(await signed.text()).toContain('<Code>NotImplemented</Code>');
  });

  test('a wrong checksum header or Content-MD5 is BadDigest', async () => {
    expect(await errorName(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'x', Body: 'data', ChecksumCRC32: 'AAAAAA==' })))).toBe(
      'BadDigest',
    );
    expect(
      await errorName(
        s3.send(
          new PutObjectCommand({ Bucket: BUCKET, Key: 'x', Body: 'data', ContentMD5: createHash('md5').update('other').digest('base64') }),
        ),
      ),
    ).toBe('BadDigest');
  });

  test('presigned PUT and GET work with plain fetch; an expired URL is refused', async () => {
    const presigner = clientFor(server, { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
    try {
      const putUrl = await getSignedUrl(presigner, new PutObjectCommand({ Bucket: BUCKET, Key: 'presigned/a.txt' }), { expiresIn: 60 });
      const put = await fetch(putUrl, { method: 'PUT', body: 'via presigned url' });
      expect(put.status).toBe(200);
      expect(put.headers.get('etag')).toMatch(/^"[0-9a-f]{32}"$/);

      const getUrl = await getSignedUrl(presigner, new GetObjectCommand({ Bucket: BUCKET, Key: 'presigned/a.txt' }), { expiresIn: 60 });
      const got = await fetch(getUrl);
      expect(got.status).toBe(200);
      expect(await got.text()).toBe('via presigned url');

      // With the default client the SDK signs the CRC32 of an empty body into the URL; S3 ignores it.
      const defaultUrl = await getSignedUrl(s3, new PutObjectCommand({ Bucket: BUCKET, Key: 'presigned/b.txt' }), { expiresIn: 60 });
      expect(new URL(defaultUrl).searchParams.has('x-amz-checksum-crc32')).toBe(true);
      expect((await fetch(defaultUrl, { method: 'PUT', body: 'b' })).status).toBe(200);

      const shortLived = await getSignedUrl(presigner, new GetObjectCommand({ Bucket: BUCKET, Key: 'presigned/a.txt' }), { expiresIn: 1 });
      await new Promise((r) => setTimeout(r, 2100));
      const expired = await fetch(shortLived);
      expect(expired.status).toBe(403);
      const text = await expired.text();
      expect(text).toContain('<Code>AccessDenied</Code>');
      expect(text).toContain('Request has expired');
    } finally {
      presigner.destroy();
    }
  });

  test('unknown keys and buckets give NoSuchKey and NoSuchBucket', async () => {
    expect(await errorName(s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'nope' })))).toBe('NoSuchKey');
    expect(await errorName(s3.send(new GetObjectCommand({ Bucket: 'no-such-bucket', Key: 'k' })))).toBe('NoSuchBucket');
    expect(await errorName(s3.send(new PutObjectCommand({ Bucket: 'no-such-bucket', Key: 'k', Body: 'x' })))).toBe('NoSuchBucket');
    expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'nope' })))).toBe('NotFound');
    const patch = await fetch(`${server.url}/${BUCKET}/k`, { method: 'PATCH' });
    expect(patch.status).toBe(405);
    expect(await patch.text()).toContain('<Code>MethodNotAllowed</Code>');
  });

  test('what Ferry does not use answers NotImplemented, and a sub-resource is never taken for the object', async () => {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'kept', Body: 'kept' }));
    expect(await errorName(s3.send(new ListObjectsV2Command({ Bucket: BUCKET })))).toBe('NotImplemented');
    expect(await errorName(s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'kept' })))).toBe('NotImplemented');
    for (const Quiet of [false, true]) {
      const deleteObjects = new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: [{ Key: 'kept' }], Quiet } });
      expect(await errorName(s3.send(deleteObjects))).toBe('NotImplemented');
    }
    const tagging = await fetch(`${server.url}/${BUCKET}/kept?tagging`, { method: 'PUT', body: '<Tagging/>' });
    expect(tagging.status).toBe(501);
    expect(String(await getBytes(s3, 'kept'))).toBe('kept');
    // HTTP lets a server ignore Range: the whole object, 200.
    const ranged = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'kept', Range: 'bytes=1-2' }));
    expect(ranged.$metadata.httpStatusCode).toBe(200);
    expect(await ranged.Body!.transformToString()).toBe('kept');
  });

  test('a created bucket takes keys of any characters; DeleteObjects answers NotImplemented and deletes none', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'keys-test' }));
    const keys = ['a/1', '007', ' spaced ', 'a&b<c>"d\'', 'line\r\nbreak', 'tab\there', 'ünïcødé/☃'];
    for (const key of keys) await s3.send(new PutObjectCommand({ Bucket: 'keys-test', Key: key, Body: key }));
    for (const key of keys) expect(String(await getBytes(s3, key, 'keys-test'))).toBe(key);

    const deleteObjects = new DeleteObjectsCommand({ Bucket: 'keys-test', Delete: { Objects: keys.map((Key) => ({ Key })) } });
    expect(await errorName(s3.send(deleteObjects))).toBe('NotImplemented');
    const body = '<Delete><Object><Key>a/1</Key></Object></Delete>';
    const raw = await fetch(`${server.url}/keys-test?delete`, {
      method: 'POST',
      headers: { 'content-md5': createHash('md5').update(body).digest('base64') },
      body,
    });
    expect(raw.status).toBe(501);
    expect(await raw.text()).toContain('<Code>NotImplemented</Code>');
    for (const key of keys) expect(String(await getBytes(s3, key, 'keys-test'))).toBe(key);
  });
});

describe('local S3 server (on disk)', () => {
  let root: string;
  let dataDir: string;

  beforeAll(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-s3-'));
    dataDir = path.join(root, 'data');
  });
  afterAll(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  test('objects survive a restart, and no key escapes the data folder', async () => {
    const escaping = ['../../escape.txt', '../outside/../../x', 'a/../../b', '..', '/abs/path'];
    let server = await startS3Server({ dataDir, buckets: [BUCKET] });
    let s3 = clientFor(server);
    const big = randomBytes(2 * 1024 * 1024);
    try {
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'keep/me.bin', Body: big, Metadata: { kind: 'blob' } }));
      for (const key of escaping) await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: key }));
      // Percent-encoded dots reach the server as the same key.
      const raw = await fetch(`${server.url}/${BUCKET}/%2e%2e%2fraw`, { method: 'PUT', body: 'raw' });
      expect(raw.status).toBe(200);
      // A failed upload leaves nothing behind.
      expect(await errorName(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'bad', Body: 'x', ChecksumCRC32: 'AAAAAA==' })))).toBe(
        'BadDigest',
      );
    } finally {
      s3.destroy();
      await server.close();
    }

    expect(await fs.readdir(root)).toEqual(['data']);
    expect((await fs.readdir(dataDir)).sort()).toEqual(['.tmp', BUCKET]);
    expect(await fs.readdir(path.join(dataDir, '.tmp'))).toEqual([]);
    for (const file of await fs.readdir(path.join(dataDir, BUCKET))) {
      expect(file).toMatch(/^[0-9a-f]{64}(\.json|\.[0-9a-f]{16}\.data)$/);
    }
    expect((await fs.readdir(path.join(dataDir, BUCKET))).length).toBe(2 * (escaping.length + 2));

    server = await startS3Server({ dataDir });
    s3 = clientFor(server);
    try {
      // An upload cut off halfway leaves nothing behind either.
      const cut = request(`${server.url}/${BUCKET}/cut-off`, { method: 'PUT', headers: { 'content-length': String(1024 * 1024) } });
      cut.on('error', () => undefined);
      cut.write(randomBytes(256 * 1024));
      await new Promise((r) => setTimeout(r, 100));
      cut.destroy();
      for (let i = 0; i < 50 && (await fs.readdir(path.join(dataDir, '.tmp'))).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(await fs.readdir(path.join(dataDir, '.tmp'))).toEqual([]);
      expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'cut-off' })))).toBe('NotFound');

      const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'keep/me.bin' }));
      expect(got.Metadata).toEqual({ kind: 'blob' });
      expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(big));
      for (const key of escaping) expect(String(await getBytes(s3, key))).toBe(key);
      expect(String(await getBytes(s3, '../raw'))).toBe('raw');
      // An overwrite keeps exactly one data file per object, for a '..' key too, and touches no other key.
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'keep/me.bin', Body: 'smaller' }));
      expect(String(await getBytes(s3, 'keep/me.bin'))).toBe('smaller');
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: '..', Body: 'dot-dot again' }));
      expect(String(await getBytes(s3, '..'))).toBe('dot-dot again');
      for (const key of escaping.filter((k) => k !== '..')) expect(String(await getBytes(s3, key))).toBe(key);
      expect(String(await getBytes(s3, '../raw'))).toBe('raw');
      expect((await fs.readdir(path.join(dataDir, BUCKET))).length).toBe(2 * (escaping.length + 2));
      // DeleteObjects is not implemented: it removes no file.
      expect(await errorName(s3.send(new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: [{ Key: '..' }] } })))).toBe(
        'NotImplemented',
      );
      expect(String(await getBytes(s3, '..'))).toBe('dot-dot again');
      expect((await fs.readdir(path.join(dataDir, BUCKET))).length).toBe(2 * (escaping.length + 2));
    } finally {
      s3.destroy();
      await server.close();
    }
  });
});
