/** S3's XML: the answers this server writes, and the one request body it reads (DeleteObjects). */
import type { ServerResponse } from 'node:http';
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { malformedXml } from './errors';

export const XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/';
// S3: at most 1,000 keys per DeleteObjects.
const MAX_DELETE_KEYS = 1000;

/**
 * Text is escaped here rather than by the builder, so that control characters go out as
 * character references and come back as they went: XML 1.0 has no raw form for most of them,
 * and the SDK's parser reads a raw CR as LF (the SDK itself writes CR and LF in keys this way).
 */
const builder = new XMLBuilder({ ignoreAttributes: false, processEntities: false, tagValueProcessor: (_, value) => escape(String(value)) });

function escape(text: string): string {
  return text.replace(/[&<>"'\p{Cc}]/gu, (c) => {
    switch (c) {
      case '&':
        return '&amp;';
      case '<':
        return '&lt;';
      case '>':
        return '&gt;';
      case '"':
        return '&quot;';
      case "'":
        return '&apos;';
      default:
        return `&#x${c.charCodeAt(0).toString(16)};`;
    }
  });
}

/** An XML answer: `{ Error: { Code: ..., ... } }`, an array for a repeated element. */
export function sendXml(
  res: ServerResponse,
  status: number,
  document: Record<string, unknown>,
  headers: Record<string, string> = {},
): void {
  const bytes = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?>\n${builder.build(document)}`);
  res.writeHead(status, { ...headers, 'content-type': 'application/xml', 'content-length': String(bytes.length) });
  res.end(bytes);
}

// Values stay text (a key "007" is no number) with their spaces; the SDK writes CR and LF in
// keys as numeric character references, which `htmlEntities` decodes.
const parser = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  trimValues: false,
  htmlEntities: true,
  isArray: (_, jPath) => jPath === 'Delete.Object',
});

/** The keys and Quiet flag of a DeleteObjects body, or MalformedXML. */
export function parseDeleteRequest(body: string): { keys: string[]; quiet: boolean } {
  let doc: { Delete?: { Object?: { Key?: unknown }[]; Quiet?: unknown } };
  try {
    doc = parser.parse(body, true);
  } catch {
    throw malformedXml();
  }
  const objects = doc.Delete?.Object ?? [];
  const keys = objects.map((o) => o?.Key);
  if (keys.length === 0 || keys.length > MAX_DELETE_KEYS || !keys.every((k): k is string => typeof k === 'string')) throw malformedXml();
  const quiet = String(doc.Delete?.Quiet ?? '').trim();
  return { keys, quiet: quiet.toLowerCase() === 'true' };
}
