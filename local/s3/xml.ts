/** S3's XML: the answers this server writes (it reads no XML request body). */
import type { ServerResponse } from 'node:http';
import { XMLBuilder } from 'fast-xml-parser';

/**
 * Text is escaped here rather than by the builder, so that control characters go out as
 * character references and come back as they went (a key in a NoSuchKey answer): XML 1.0 has
 * no raw form for most of them, and the SDK's parser reads a raw CR as LF.
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
