// Original file: proto/tidemark/v1/replication.proto

import type { Welcome as _tidemark_v1_Welcome, Welcome__Output as _tidemark_v1_Welcome__Output } from '../../tidemark/v1/Welcome';
import type { Ack as _tidemark_v1_Ack, Ack__Output as _tidemark_v1_Ack__Output } from '../../tidemark/v1/Ack';
import type { Fingerprints as _tidemark_v1_Fingerprints, Fingerprints__Output as _tidemark_v1_Fingerprints__Output } from '../../tidemark/v1/Fingerprints';

export interface ApplianceMessage {
  'welcome'?: (_tidemark_v1_Welcome | null);
  'ack'?: (_tidemark_v1_Ack | null);
  'fingerprints'?: (_tidemark_v1_Fingerprints | null);
  'body'?: "welcome"|"ack"|"fingerprints";
}

export interface ApplianceMessage__Output {
  'welcome'?: (_tidemark_v1_Welcome__Output | null);
  'ack'?: (_tidemark_v1_Ack__Output | null);
  'fingerprints'?: (_tidemark_v1_Fingerprints__Output | null);
  'body'?: "welcome"|"ack"|"fingerprints";
}
