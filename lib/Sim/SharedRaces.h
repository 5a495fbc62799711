//===- SharedRaces.h - shared-memory race detection for one CTA -----------===//
//
// Vector clocks over the CTA's threads plus one agent per asynchronous
// copy engine (TMA), with FastTrack-style shadow state per shared byte: the
// last write's epoch and the reads since (one epoch, or a clock per thread
// once two unordered threads have read). An access races when the
// conflicting earlier access is not ordered before it by a happens-before
// chain of the simulator's synchronizations: CTA barriers, mbarrier phases
// (arrivals and transaction completions release, a successful wait
// acquires), and warp / warpgroup collectives (treated as synchronizing
// their lanes, which can only hide races, never invent them).
//
// One detector serves a whole thread-block cluster: its agents are the
// threads of every CTA (CTA rank r's thread t is agent r * threadsPerCta +
// t) plus one copy engine, and its shadow covers every CTA's shared memory
// (rank r's byte k at r * bytesPerCta + k), so accesses to a peer's shared
// memory (mapa, ld/st.shared::cluster, multicast copies) are checked against
// the peer's own, ordered by remote mbarrier arrivals and barrier.cluster.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_SHAREDRACES_H
#define ATTN_SIM_SHAREDRACES_H

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace attn::sim {

class SharedRaces {
public:
  using Clock = std::vector<uint32_t>;
  static constexpr uint32_t kNone = ~0u;

  /// `agents` = threads + 1 (the asynchronous copy engine).
  SharedRaces(uint32_t threads, uint32_t sharedBytes)
      : threads(threads), clocks(threads + 1, Clock(threads + 1, 0)),
        shadow(sharedBytes) {
    for (uint32_t t = 0; t <= threads; ++t)
      clocks[t][t] = 1;
  }

  /// Names agents and addresses by CTA rank in reports (clusters of more
  /// than one CTA).
  void nameCtas(uint32_t threadsPerCta, uint32_t bytesPerCta) {
    ctaThreads = threadsPerCta;
    ctaBytes = bytesPerCta;
  }

  uint32_t engine() const { return threads; }
  Clock &clock(uint32_t agent) { return clocks[agent]; }

  static void join(Clock &into, const Clock &from) {
    if (into.size() < from.size())
      into.resize(from.size(), 0);
    for (size_t i = 0; i < from.size(); ++i)
      if (from[i] > into[i])
        into[i] = from[i];
  }
  /// After a release, later accesses of `agent` are new events.
  void tick(uint32_t agent) { ++clocks[agent][agent]; }

  /// Checks and records an access by `agent` with clock `c` (normally
  /// clock(agent)); returns a description of the race, or "".
  std::string access(uint32_t agent, const Clock &c, uint32_t address,
                     uint32_t bytes, bool write, uint32_t line) {
    for (uint32_t i = 0; i < bytes; ++i) {
      Byte &b = shadow[address + i];
      uint32_t now = c[agent];
      // Against the last write.
      if (b.writer != kNone && b.writer != agent && b.writeClock > c[b.writer])
        return describe(agent, write, b.writer, true, b.writeLine, address + i);
      if (write) {
        if (b.readers) {
          for (uint32_t u = 0; u <= threads; ++u)
            if (u != agent && (*b.readers)[u] > c[u])
              return describe(agent, true, u, false, b.readLine, address + i);
        } else if (b.reader != kNone && b.reader != agent &&
                   b.readClock > c[b.reader]) {
          return describe(agent, true, b.reader, false, b.readLine,
                          address + i);
        }
        b.writer = agent;
        b.writeClock = now;
        b.writeLine = line;
        b.reader = kNone;
        b.readers.reset();
        continue;
      }
      if (b.readers) {
        (*b.readers)[agent] = now;
      } else if (b.reader == kNone || b.reader == agent ||
                 b.readClock <= c[b.reader]) {
        b.reader = agent; // the earlier read is ordered before this one
        b.readClock = now;
      } else {
        b.readers = std::make_unique<Clock>(threads + 1, 0);
        (*b.readers)[b.reader] = b.readClock;
        (*b.readers)[agent] = now;
      }
      b.readLine = line;
    }
    return "";
  }

private:
  struct Byte {
    uint32_t writer = kNone, writeClock = 0, writeLine = 0;
    uint32_t reader = kNone, readClock = 0, readLine = 0;
    std::unique_ptr<Clock> readers;
  };
  uint32_t threads;
  uint32_t ctaThreads = 0, ctaBytes = 0;
  std::vector<Clock> clocks;
  std::vector<Byte> shadow;

  std::string who(uint32_t agent) const {
    if (agent == threads)
      return "the TMA engine";
    if (!ctaThreads)
      return "thread " + std::to_string(agent);
    return "thread " + std::to_string(agent % ctaThreads) + " of CTA rank " +
           std::to_string(agent / ctaThreads);
  }
  std::string describe(uint32_t agent, bool write, uint32_t other,
                       bool otherWrote, uint32_t otherLine,
                       uint32_t address) const {
    std::string at = "0x" + hex(address);
    if (ctaBytes)
      at = "0x" + hex(address % ctaBytes) + " of CTA rank " +
           std::to_string(address / ctaBytes);
    return "shared-memory race at " + at + ": " + who(agent) +
           (write ? " writes" : " reads") + " it, unordered with the " +
           (otherWrote ? "write" : "read") + " by " + who(other) +
           " (PTX line " + std::to_string(otherLine) +
           "): no barrier or mbarrier phase orders them";
  }
  static std::string hex(uint32_t v) {
    char buf[16];
    snprintf(buf, sizeof(buf), "%x", v);
    return buf;
  }
};

} // namespace attn::sim

#endif // ATTN_SIM_SHAREDRACES_H
