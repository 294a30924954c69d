// SPDX-License-Identifier: BSD-3-Clause
// The code of docs/, compiled and run at world sizes 1 to 4. docs/writing_policies.md and
// docs/templates.md show these files verbatim; the test docs.snippets checks that they do.
#include "../docs/snippets/test_policies.hpp"
#include "../docs/snippets/train_test.hpp"
