import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { ControlClient as _tidemark_v1_ControlClient, ControlDefinition as _tidemark_v1_ControlDefinition } from './tidemark/v1/Control';
import type { CreateTimeMarkReply as _tidemark_v1_CreateTimeMarkReply, CreateTimeMarkReply__Output as _tidemark_v1_CreateTimeMarkReply__Output } from './tidemark/v1/CreateTimeMarkReply';
import type { CreateTimeMarkRequest as _tidemark_v1_CreateTimeMarkRequest, CreateTimeMarkRequest__Output as _tidemark_v1_CreateTimeMarkRequest__Output } from './tidemark/v1/CreateTimeMarkRequest';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  tidemark: {
    v1: {
      Control: SubtypeConstructor<typeof grpc.Client, _tidemark_v1_ControlClient> & { service: _tidemark_v1_ControlDefinition }
      CreateTimeMarkReply: MessageTypeDefinition<_tidemark_v1_CreateTimeMarkReply, _tidemark_v1_CreateTimeMarkReply__Output>
      CreateTimeMarkRequest: MessageTypeDefinition<_tidemark_v1_CreateTimeMarkRequest, _tidemark_v1_CreateTimeMarkRequest__Output>
    }
  }
}

