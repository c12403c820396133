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

  test('put, get, head and delete (DeleteObjects) an object with metadata', async () => {
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

    const remove = new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: [{ Key: 'tasks/t-1/result.json' }], Quiet: true } });
    await s3.send(remove);
    await s3.send(remove); // a key that is not there is no error
    expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'tasks/t-1/result.json' })))).toBe('NotFound');
  });

  test('a 20 MB object goes through intact', async () => {
    const body = randomBytes(20 * 1024 * 1024);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'big.bin', Body: body }));
    const got = await getBytes(s3, 'big.bin');
    expect(got.length).toBe(body.length);
    expect(sha256(got)).toBe(sha256(body));
  });

  test('streamed uploads use aws-chunked with a trailing checksum, which is verified', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    const pieces = [body.subarray(0, 1_000_000), body.subarray(1_000_000, 2_500_000), body.subarray(2_500_000)];
    for (const [key, algorithm] of [
      ['chunked-default.bin', undefined],
      ['chunked-crc32c.bin', 'CRC32C'],
    ] as const) {
      const put = await s3.send(
        new PutObjectCommand({
          Bucket: BUCKET,
          Key: key,
          Body: Readable.from(pieces),
          ContentLength: body.length,
          ChecksumAlgorithm: algorithm,
        }),
      );
      expect(put.ChecksumCRC32 ?? put.ChecksumCRC32C).toBeDefined();
      expect(sha256(await getBytes(s3, key))).toBe(sha256(body));
    }
    // The stored checksum comes back with the object (the SDK validates it on read).
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'chunked-default.bin', ChecksumMode: 'ENABLED' }));
    expect(got.ChecksumCRC32).toBeDefined();
    await got.Body!.transformToByteArray();
    const gotC = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'chunked-crc32c.bin', ChecksumMode: 'ENABLED' }));
    expect(gotC.ChecksumCRC32C).toBeDefined();
    expect(sha256(await gotC.Body!.transformToByteArray())).toBe(sha256(body));
    // Checksums other than CRC32 and CRC32C are refused, not stored unchecked.
    const sha = new PutObjectCommand({
      Bucket: BUCKET,
      Key: 'sha256.bin',
      Body: Readable.from(pieces),
      ContentLength: body.length,
      ChecksumAlgorithm: 'SHA256',
    });
    expect(await errorName(s3.send(sha))).toBe('NotImplemented');
  });

  test('aws-chunked: a right trailing CRC32 or CRC32C is kept, a wrong one is BadDigest; signed chunks are not implemented', async () => {
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
    // CRC32C("hello world") = 0xc99465aa, CRC32("hello world") = 0x0d4a1185.
    const good = await chunked(
      'crc32c.txt',
      'x-amz-checksum-crc32c',
      '5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32c:yZRlqg==\r\n\r\n',
    );
    expect(good.status).toBe(200);
    expect(good.headers.get('x-amz-checksum-crc32c')).toBe('yZRlqg==');
    expect(await getBytes(s3, 'crc32c.txt').then(String)).toBe('hello world');
    const goodCrc32 = await chunked('crc32.txt', 'x-amz-checksum-crc32', 'b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n');
    expect(goodCrc32.status).toBe(200);

    for (const [key, trailer] of [
      ['bad-crc32.txt', 'x-amz-checksum-crc32'],
      ['bad-crc32c.txt', 'x-amz-checksum-crc32c'],
    ]) {
      const bad = await chunked(key, trailer, `b\r\nhello world\r\n0\r\n${trailer}:AAAAAA==\r\n\r\n`);
      expect(bad.status).toBe(400);
      expect(await bad.text()).toContain('<Code>BadDigest</Code>');
      expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key })))).toBe('NotFound');
    }

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
    expect(await errorName(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'x', Body: 'data', ChecksumCRC32C: 'AAAAAA==' })))).toBe(
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
    const tagging = await fetch(`${server.url}/${BUCKET}/kept?tagging`, { method: 'PUT', body: '<Tagging/>' });
    expect(tagging.status).toBe(501);
    expect(String(await getBytes(s3, 'kept'))).toBe('kept');
    // HTTP lets a server ignore Range: the whole object, 200.
    const ranged = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'kept', Range: 'bytes=1-2' }));
    expect(ranged.$metadata.httpStatusCode).toBe(200);
    expect(await ranged.Body!.transformToString()).toBe('kept');
  });

  test('DeleteObjects takes keys of any characters, and answers each unless Quiet', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'delete-test' }));
    const keys = ['a/1', '007', ' spaced ', 'a&b<c>"d\'', 'line\r\nbreak', 'tab\there', 'ünïcødé/☃'];
    for (const key of keys) await s3.send(new PutObjectCommand({ Bucket: 'delete-test', Key: key, Body: key }));
    for (const key of keys) expect(String(await getBytes(s3, key, 'delete-test'))).toBe(key);

    const deleted = await s3.send(new DeleteObjectsCommand({ Bucket: 'delete-test', Delete: { Objects: keys.map((Key) => ({ Key })) } }));
    expect(deleted.Deleted!.map((d) => d.Key)).toEqual(keys);
    for (const key of keys) {
      expect(await errorName(s3.send(new HeadObjectCommand({ Bucket: 'delete-test', Key: key })))).toBe('NotFound');
    }
    const quiet = await s3.send(new DeleteObjectsCommand({ Bucket: 'delete-test', Delete: { Objects: [{ Key: 'a/1' }], Quiet: true } }));
    expect(quiet.Deleted).toBeUndefined();

    const raw = (body: string) =>
      fetch(`${server.url}/delete-test?delete`, {
        method: 'POST',
        headers: { 'content-md5': createHash('md5').update(body).digest('base64') },
        body,
      });
    expect(await (await raw('<Delete><Object><Key>unclosed</Delete>')).text()).toContain('<Code>MalformedXML</Code>');
    expect(await (await raw('<Delete></Delete>')).text()).toContain('<Code>MalformedXML</Code>');
    const noDigest = await fetch(`${server.url}/delete-test?delete`, {
      method: 'POST',
      body: '<Delete><Object><Key>k</Key></Object></Delete>',
    });
    expect(await noDigest.text()).toContain('<Code>InvalidRequest</Code>');
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
      // Overwrite and delete keep exactly one data file per object.
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'keep/me.bin', Body: 'smaller' }));
      expect(String(await getBytes(s3, 'keep/me.bin'))).toBe('smaller');
      await s3.send(new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: [{ Key: '..' }] } }));
      expect((await fs.readdir(path.join(dataDir, BUCKET))).length).toBe(2 * (escaping.length + 1));
    } finally {
      s3.destroy();
      await server.close();
    }
  });
});
