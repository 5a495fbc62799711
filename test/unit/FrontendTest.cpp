#include <gtest/gtest.h>
TEST(Frontend, Placeholder) {}
