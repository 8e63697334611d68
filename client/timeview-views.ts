// Named views an appliance serves from its own NBD server (`tidemark
// timeview create|list|delete`): the Admin calls, for the CLI, tests and
// benchmarks. The appliance resolves the point (as restore does) and keeps
// the view, and a writable view's overlay, until it is deleted.
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { CreateViewRequest } from '../proto/generated/tidemark/v1/CreateViewRequest'
import type { DeleteViewRequest } from '../proto/generated/tidemark/v1/DeleteViewRequest'
import type { ListViewsReply__Output } from '../proto/generated/tidemark/v1/ListViewsReply'
import type { ListViewsRequest } from '../proto/generated/tidemark/v1/ListViewsRequest'
import type { PointInTime } from '../proto/generated/tidemark/v1/PointInTime'
import type { ViewInfo__Output } from '../proto/generated/tidemark/v1/ViewInfo'
import { clientError, unary } from './admin-client'

export type ViewInfo = ViewInfo__Output

export async function createView(
  client: AdminClient,
  v: { volume: string; point: PointInTime; name: string; writable: boolean },
  command = 'timeview create'
): Promise<ViewInfo> {
  try {
    return await unary<CreateViewRequest, ViewInfo__Output>(client.createView.bind(client), v)
  } catch (err) {
    throw clientError(command, err)
  }
}

/** Every view the caller may see, or one volume's. */
export async function listViews(client: AdminClient, volume = '', command = 'timeview list'): Promise<ViewInfo[]> {
  try {
    return (await unary<ListViewsRequest, ListViewsReply__Output>(client.listViews.bind(client), { volume })).views
  } catch (err) {
    throw clientError(command, err)
  }
}

/** Deletes a view: its connections are closed and its overlay dropped. */
export async function deleteView(client: AdminClient, name: string, command = 'timeview delete'): Promise<ViewInfo> {
  try {
    return await unary<DeleteViewRequest, ViewInfo__Output>(client.deleteView.bind(client), { name })
  } catch (err) {
    throw clientError(command, err)
  }
}
