// Original file: proto/tidemark/v1/replication.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Sent by the agent about every second (on the data channel when it has one):
 * the same RPO point a batch carries, for a volume with nothing to send, and
 * what the agent alone knows of the volume's state. The appliance's RPO is
 * now minus the newest captured_before_ms whose seq is durable: an idle
 * volume shows a small one, a stream that silently stops a growing one.
 */
export interface Heartbeat {
  /**
   * Every write captured before captured_before_ms has a seq at or below this.
   */
  'seq'?: (number | string | Long);
  /**
   * 0: no point to report (resyncing or copying): the RPO keeps growing.
   */
  'capturedBeforeMs'?: (number | string | Long);
  /**
   * normal, behind, resync or initial_copy, as the agent's tap sees it.
   */
  'state'?: (string);
  /**
   * Captured and not yet acknowledged: the tap's buffer and the send window.
   */
  'backlogBytes'?: (number | string | Long);
  /**
   * Regions still to resend (a resync, or the initial copy), in bytes.
   */
  'resyncRemainingBytes'?: (number | string | Long);
}

/**
 * Sent by the agent about every second (on the data channel when it has one):
 * the same RPO point a batch carries, for a volume with nothing to send, and
 * what the agent alone knows of the volume's state. The appliance's RPO is
 * now minus the newest captured_before_ms whose seq is durable: an idle
 * volume shows a small one, a stream that silently stops a growing one.
 */
export interface Heartbeat__Output {
  /**
   * Every write captured before captured_before_ms has a seq at or below this.
   */
  'seq': (number);
  /**
   * 0: no point to report (resyncing or copying): the RPO keeps growing.
   */
  'capturedBeforeMs': (number);
  /**
   * normal, behind, resync or initial_copy, as the agent's tap sees it.
   */
  'state': (string);
  /**
   * Captured and not yet acknowledged: the tap's buffer and the send window.
   */
  'backlogBytes': (number);
  /**
   * Regions still to resend (a resync, or the initial copy), in bytes.
   */
  'resyncRemainingBytes': (number);
}
