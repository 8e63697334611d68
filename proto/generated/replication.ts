import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { Ack as _tidemark_v1_Ack, Ack__Output as _tidemark_v1_Ack__Output } from './tidemark/v1/Ack';
import type { AgentMessage as _tidemark_v1_AgentMessage, AgentMessage__Output as _tidemark_v1_AgentMessage__Output } from './tidemark/v1/AgentMessage';
import type { ApplianceMessage as _tidemark_v1_ApplianceMessage, ApplianceMessage__Output as _tidemark_v1_ApplianceMessage__Output } from './tidemark/v1/ApplianceMessage';
import type { ChangeBatch as _tidemark_v1_ChangeBatch, ChangeBatch__Output as _tidemark_v1_ChangeBatch__Output } from './tidemark/v1/ChangeBatch';
import type { DataHello as _tidemark_v1_DataHello, DataHello__Output as _tidemark_v1_DataHello__Output } from './tidemark/v1/DataHello';
import type { FingerprintRequest as _tidemark_v1_FingerprintRequest, FingerprintRequest__Output as _tidemark_v1_FingerprintRequest__Output } from './tidemark/v1/FingerprintRequest';
import type { Fingerprints as _tidemark_v1_Fingerprints, Fingerprints__Output as _tidemark_v1_Fingerprints__Output } from './tidemark/v1/Fingerprints';
import type { Heartbeat as _tidemark_v1_Heartbeat, Heartbeat__Output as _tidemark_v1_Heartbeat__Output } from './tidemark/v1/Heartbeat';
import type { Hello as _tidemark_v1_Hello, Hello__Output as _tidemark_v1_Hello__Output } from './tidemark/v1/Hello';
import type { ReplicationClient as _tidemark_v1_ReplicationClient, ReplicationDefinition as _tidemark_v1_ReplicationDefinition } from './tidemark/v1/Replication';
import type { SyncProgress as _tidemark_v1_SyncProgress, SyncProgress__Output as _tidemark_v1_SyncProgress__Output } from './tidemark/v1/SyncProgress';
import type { Welcome as _tidemark_v1_Welcome, Welcome__Output as _tidemark_v1_Welcome__Output } from './tidemark/v1/Welcome';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  tidemark: {
    v1: {
      Ack: MessageTypeDefinition<_tidemark_v1_Ack, _tidemark_v1_Ack__Output>
      AgentMessage: MessageTypeDefinition<_tidemark_v1_AgentMessage, _tidemark_v1_AgentMessage__Output>
      ApplianceMessage: MessageTypeDefinition<_tidemark_v1_ApplianceMessage, _tidemark_v1_ApplianceMessage__Output>
      ChangeBatch: MessageTypeDefinition<_tidemark_v1_ChangeBatch, _tidemark_v1_ChangeBatch__Output>
      Compression: EnumTypeDefinition
      DataHello: MessageTypeDefinition<_tidemark_v1_DataHello, _tidemark_v1_DataHello__Output>
      FingerprintRequest: MessageTypeDefinition<_tidemark_v1_FingerprintRequest, _tidemark_v1_FingerprintRequest__Output>
      Fingerprints: MessageTypeDefinition<_tidemark_v1_Fingerprints, _tidemark_v1_Fingerprints__Output>
      Heartbeat: MessageTypeDefinition<_tidemark_v1_Heartbeat, _tidemark_v1_Heartbeat__Output>
      Hello: MessageTypeDefinition<_tidemark_v1_Hello, _tidemark_v1_Hello__Output>
      Replication: SubtypeConstructor<typeof grpc.Client, _tidemark_v1_ReplicationClient> & { service: _tidemark_v1_ReplicationDefinition }
      SyncProgress: MessageTypeDefinition<_tidemark_v1_SyncProgress, _tidemark_v1_SyncProgress__Output>
      Welcome: MessageTypeDefinition<_tidemark_v1_Welcome, _tidemark_v1_Welcome__Output>
    }
  }
}

