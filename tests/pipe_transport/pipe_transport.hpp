// A test-only transport: ranks that are threads of one process, each pair joined by one
// socketpair carrying the frame format of every byte transport (frame_codec.hpp) both ways.
// It exists to show what a transport needs: this folder and one line in the conformance
// suite's table (channel_conformance_test.cpp), nothing else.
#pragma once

#include "transport.hpp"

namespace rankmesh::test {

const Transport& pipe_transport();

}  // namespace rankmesh::test
