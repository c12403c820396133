import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  QueryCommand as QueryItemsCommand,
  ScanCommand as ScanItemsCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClient,
  type WriteRequest,
} from '@aws-sdk/client-dynamodb';
import {
  BatchGetCommand,
  BatchWriteCommand,
  DeleteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
  type BatchGetCommandOutput,
  type BatchWriteCommandOutput,
  type DeleteCommandOutput,
  type GetCommandOutput,
  type PutCommandOutput,
  type QueryCommandOutput,
  type ScanCommandOutput,
  type UpdateCommandOutput,
} from '@aws-sdk/lib-dynamodb';
import { marshall, unmarshall, type NativeAttributeValue } from '@aws-sdk/util-dynamodb';

/** The lib-dynamodb commands Ferry sends, each with its output. */
export type DocumentCommand =
  GetCommand | PutCommand | UpdateCommand | DeleteCommand | QueryCommand | ScanCommand | BatchGetCommand | BatchWriteCommand;
type OutputOf<C> = C extends GetCommand
  ? GetCommandOutput
  : C extends PutCommand
    ? PutCommandOutput
    : C extends UpdateCommand
      ? UpdateCommandOutput
      : C extends DeleteCommand
        ? DeleteCommandOutput
        : C extends QueryCommand
          ? QueryCommandOutput
          : C extends ScanCommand
            ? ScanCommandOutput
            : C extends BatchGetCommand
              ? BatchGetCommandOutput
              : C extends BatchWriteCommand
                ? BatchWriteCommandOutput
                : never;

type Native = Record<string, NativeAttributeValue>;
type Marshalled = Record<string, AttributeValue>;

const toItem = (v: Native): Marshalled => marshall(v, { removeUndefinedValues: true });
const toItemOpt = (v: Native | undefined): Marshalled | undefined => (v === undefined ? undefined : toItem(v));
const fromItem = (v: Marshalled): Native => unmarshall(v);
const fromItemOpt = (v: Marshalled | undefined): Native | undefined => (v === undefined ? undefined : fromItem(v));
const fromItems = (v: Marshalled[] | undefined): Native[] | undefined => v?.map(fromItem);

/**
 * lib-dynamodb's commands, sent through a low-level DynamoDBClient built with `cacheMiddleware`,
 * which resolves its middleware stack once per command type instead of on every call (the
 * DynamoDBDocumentClient refuses that option). Values are marshalled as the DocumentClient does,
 * with util-dynamodb and `removeUndefinedValues`; the legacy parameters (Expected,
 * AttributeUpdates, KeyConditions, QueryFilter, ScanFilter), which Ferry never uses, are refused.
 *
 * A middleware added to `client` after its first call reaches only command types not yet sent:
 * add middleware before use (core/clients.ts does, for the counters and the X-Ray capture).
 */
export class DocumentClient {
  constructor(readonly client: DynamoDBClient) {}

  async send<C extends DocumentCommand>(command: C): Promise<OutputOf<C>> {
    return (await this.dispatch(command)) as OutputOf<C>;
  }

  destroy(): void {
    this.client.destroy();
  }

  private async dispatch(command: DocumentCommand): Promise<unknown> {
    const input = command.input as Record<string, unknown>;
    for (const legacy of ['Expected', 'AttributeUpdates', 'KeyConditions', 'QueryFilter', 'ScanFilter'])
      if (input[legacy] !== undefined) throw new TypeError(`DocumentClient: the legacy parameter ${legacy} is not supported`);
    const values = (i: { ExpressionAttributeValues?: Native }) => ({
      ExpressionAttributeValues: toItemOpt(i.ExpressionAttributeValues),
    });
    if (command instanceof GetCommand) {
      const i = command.input;
      const out = await this.client.send(new GetItemCommand({ ...i, Key: toItemOpt(i.Key) }));
      return { ...out, Item: fromItemOpt(out.Item) };
    }
    if (command instanceof PutCommand) {
      const i = command.input;
      const out = await this.client.send(new PutItemCommand({ ...i, Item: toItemOpt(i.Item), ...values(i) }));
      return { ...out, Attributes: fromItemOpt(out.Attributes) };
    }
    if (command instanceof UpdateCommand) {
      const i = command.input;
      const out = await this.client.send(new UpdateItemCommand({ ...i, Key: toItemOpt(i.Key), ...values(i) }));
      return { ...out, Attributes: fromItemOpt(out.Attributes) };
    }
    if (command instanceof DeleteCommand) {
      const i = command.input;
      const out = await this.client.send(new DeleteItemCommand({ ...i, Key: toItemOpt(i.Key), ...values(i) }));
      return { ...out, Attributes: fromItemOpt(out.Attributes) };
    }
    if (command instanceof QueryCommand || command instanceof ScanCommand) {
      const i = command.input;
      const low = { ...i, ExclusiveStartKey: toItemOpt(i.ExclusiveStartKey), ...values(i) };
      const out = await (command instanceof QueryCommand
        ? this.client.send(new QueryItemsCommand(low))
        : this.client.send(new ScanItemsCommand(low)));
      return { ...out, Items: fromItems(out.Items), LastEvaluatedKey: fromItemOpt(out.LastEvaluatedKey) };
    }
    if (command instanceof BatchGetCommand) {
      const requests = mapValues(command.input.RequestItems ?? {}, (r) => ({ ...r, Keys: r.Keys?.map(toItem) }));
      const out = await this.client.send(new BatchGetItemCommand({ ...command.input, RequestItems: requests }));
      return {
        ...out,
        Responses: out.Responses && mapValues(out.Responses, (items) => items.map(fromItem)),
        UnprocessedKeys: out.UnprocessedKeys && mapValues(out.UnprocessedKeys, (r) => ({ ...r, Keys: r.Keys?.map(fromItem) })),
      };
    }
    if (command instanceof BatchWriteCommand) {
      const requests = mapValues(command.input.RequestItems ?? {}, (writes) =>
        writes.map((w): WriteRequest => ({
          PutRequest: w.PutRequest && { Item: toItemOpt(w.PutRequest.Item) },
          DeleteRequest: w.DeleteRequest && { Key: toItemOpt(w.DeleteRequest.Key) },
        })),
      );
      const out = await this.client.send(new BatchWriteItemCommand({ ...command.input, RequestItems: requests }));
      return {
        ...out,
        UnprocessedItems:
          out.UnprocessedItems &&
          mapValues(out.UnprocessedItems, (writes) =>
            writes.map((w) => ({
              PutRequest: w.PutRequest && { Item: fromItemOpt(w.PutRequest.Item) },
              DeleteRequest: w.DeleteRequest && { Key: fromItemOpt(w.DeleteRequest.Key) },
            })),
          ),
      };
    }
    throw new TypeError(`DocumentClient: ${(command as object).constructor.name} is not supported`);
  }
}

const mapValues = <A, B>(o: Record<string, A>, f: (a: A) => B): Record<string, B> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));
