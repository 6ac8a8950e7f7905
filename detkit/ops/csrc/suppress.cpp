// The compiled inner loops of detkit.ops.suppression (module detkit.ops._C).
//
// Shorthand: N boxes; G groups (classes; a class-agnostic call is one group); B size
// buckets of a group's spatial index; M the box selected at a step.
//
// Every suppressor is one greedy loop per group: take the highest-scoring box M that is
// left, keep it, then visit the boxes left that overlap M and suppress or decay them.
// Two things make the loop fast without changing any result:
//
// * Pairs that cannot overlap are never visited. Each group gets a spatial index: its
//   boxes are bucketed by size (bucket k holds sizes max(w, h) within a factor 4^-k of
//   the group's largest) and each bucket is a uniform grid over the boxes' top-left
//   corners, cells half as wide as the bucket's largest box. A box of bucket k can
//   overlap M only if its corner lies in (M.x1 - S_k, M.x2) x (M.y1 - S_k, M.y2): a few
//   rows of contiguous cells. Under every rule here a pair whose IoU is 0 neither
//   suppresses nor decays, so skipping those pairs is exact. Boxes of zero width or
//   height overlap nothing and stay out of the grids.
// * Coordinates and flags are stored in index order, so scans read memory sequentially.
//
// The IoU of a pair is computed with the same operations, in the same order and float
// type as torchvision's CPU nms kernel (no fused multiply-add: setup.py builds with
// -ffp-contract=off), so hard NMS makes bit-identical decisions; tests/ops/test_nms.py
// checks it.
//
// Only the Python C API and the buffer protocol are used (no torch or numpy headers):
// the module builds in seconds with any C++17 compiler. Arrays arrive C-contiguous
// with the dtypes that suppression.py documents and checks.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

namespace {

constexpr int kBuckets = 16;  // sizes below 4^-15 of the group's largest share the last

enum Criterion { kCriterionIoU = 0, kCriterionAdaptive = 1, kCriterionDIoU = 2 };
enum Decay { kDecayLinear = 1, kDecayGaussian = 2 };

struct Grid {
  double size;      // S: the largest max(w, h) of the bucket
  double x0, y0;    // origin: the smallest corner
  double inv_cell;  // 1 / cell width
  int64_t ncx, ncy;
  int64_t first_cell;  // in Index::cells
};

// Grid cell of coordinate v, clamped to [0, n - 1]; monotonic in v.
inline int64_t cell_of(double v, double origin, double inv_cell, int64_t n) {
  const double t = (v - origin) * inv_cell;
  if (!(t > 0.0)) return 0;
  if (t >= static_cast<double>(n - 1)) return n - 1;
  return static_cast<int64_t>(t);
}

// The spatial index of one group; buffers are reused from group to group.
template <typename T>
struct Index {
  std::vector<T> box;         // [n, 5]: x1, y1, x2, y2, area at each index position
  std::vector<int64_t> id;    // [n]: the box id at each position
  std::vector<int64_t> pos;   // [N]: the position of each of the group's ids
  std::vector<int64_t> cells; // cell c of a grid spans positions cells[c]:cells[c + 1]
  Grid grids[kBuckets];
  int n_grids = 0;

  explicit Index(int64_t n_all) : box(5 * n_all), id(n_all), pos(n_all) {}

  void build(const T* boxes, const int64_t* members, int64_t n) {
    std::vector<double> size(n);
    double largest = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      const T* b = boxes + 4 * members[t];
      const double w = double(b[2]) - double(b[0]), h = double(b[3]) - double(b[1]);
      size[t] = (w > 0.0 && h > 0.0) ? std::max(w, h) : 0.0;
      largest = std::max(largest, size[t]);
    }
    // bucket of each box (kBuckets: degenerate), and each bucket's size and corner extent
    std::vector<int> bucket(n);
    int64_t count[kBuckets + 1] = {0};
    double s_max[kBuckets] = {0}, x_min[kBuckets], y_min[kBuckets], x_max[kBuckets], y_max[kBuckets];
    std::fill(x_min, x_min + kBuckets, INFINITY);
    std::fill(y_min, y_min + kBuckets, INFINITY);
    std::fill(x_max, x_max + kBuckets, -INFINITY);
    std::fill(y_max, y_max + kBuckets, -INFINITY);
    for (int64_t t = 0; t < n; ++t) {
      int k = kBuckets;
      if (size[t] > 0.0) {
        k = std::min(static_cast<int>(std::log(largest / size[t]) / std::log(4.0)), kBuckets - 1);
        const T* b = boxes + 4 * members[t];
        s_max[k] = std::max(s_max[k], size[t]);
        x_min[k] = std::min(x_min[k], double(b[0]));
        x_max[k] = std::max(x_max[k], double(b[0]));
        y_min[k] = std::min(y_min[k], double(b[1]));
        y_max[k] = std::max(y_max[k], double(b[1]));
      }
      bucket[t] = k;
      ++count[k];
    }
    // one grid per non-empty bucket: cells half the bucket's size, at most ~2 per box
    int slot[kBuckets];
    int64_t first_pos[kBuckets + 1];
    n_grids = 0;
    int64_t n_cells = 0, next_pos = 0;
    for (int k = 0; k < kBuckets; ++k) {
      slot[k] = -1;
      if (count[k] == 0) continue;
      const double width = x_max[k] - x_min[k], height = y_max[k] - y_min[k];
      const double limit = 2.0 * double(count[k]) + 4.0;
      double cell = std::max({s_max[k] * 0.5, width / limit, height / limit});
      double fx = std::floor(width / cell) + 1.0, fy = std::floor(height / cell) + 1.0;
      while (fx * fy > limit) {
        cell *= std::sqrt(fx * fy / limit) * 1.01;
        fx = std::floor(width / cell) + 1.0;
        fy = std::floor(height / cell) + 1.0;
      }
      Grid& g = grids[n_grids];
      g = Grid{s_max[k], x_min[k], y_min[k], 1.0 / cell, int64_t(fx), int64_t(fy), n_cells};
      slot[k] = n_grids++;
      first_pos[k] = next_pos;
      next_pos += count[k];
      n_cells += g.ncx * g.ncy + 1;
    }
    // counting sort of the boxes by (bucket, cell); degenerate boxes go last
    std::vector<int64_t> cell(n);
    cells.assign(n_cells + 1, 0);
    for (int64_t t = 0; t < n; ++t) {
      if (bucket[t] == kBuckets) continue;
      const Grid& g = grids[slot[bucket[t]]];
      const T* b = boxes + 4 * members[t];
      const int64_t cx = cell_of(double(b[0]), g.x0, g.inv_cell, g.ncx);
      const int64_t cy = cell_of(double(b[1]), g.y0, g.inv_cell, g.ncy);
      cell[t] = g.first_cell + cy * g.ncx + cx;
      ++cells[cell[t] + 1];
    }
    for (int k = 0; k < kBuckets; ++k) {
      if (slot[k] < 0) continue;
      const Grid& g = grids[slot[k]];
      const int64_t c0 = g.first_cell;
      cells[c0] = first_pos[k];
      for (int64_t c = c0 + 1; c <= c0 + g.ncx * g.ncy; ++c) cells[c] += cells[c - 1];
    }
    std::vector<int64_t> fill(cells.begin(), cells.end());
    int64_t degenerate = next_pos;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t i = members[t];
      const int64_t p = bucket[t] == kBuckets ? degenerate++ : fill[cell[t]]++;
      const T* b = boxes + 4 * i;
      T* s = &box[5 * p];
      s[0] = b[0];
      s[1] = b[1];
      s[2] = b[2];
      s[3] = b[3];
      s[4] = (b[2] - b[0]) * (b[3] - b[1]);  // torchvision's area, in the boxes' type
      id[p] = i;
      pos[i] = p;
    }
  }

  // Calls visit(p) for every position p whose box may overlap the box at position m.
  template <typename Visit>
  void for_each_candidate(int64_t m, Visit&& visit) const {
    const T* mb = &box[5 * m];
    const double x1 = mb[0], y1 = mb[1], x2 = mb[2], y2 = mb[3];
    if (!(x2 > x1 && y2 > y1)) return;  // a degenerate box overlaps nothing
    for (int b = 0; b < n_grids; ++b) {
      const Grid& g = grids[b];
      // a corner with x1_j > x1 - S and y1_j > y1 - S can overlap M; the margin covers
      // rounding (it only adds candidates, each then tested exactly)
      const double s = g.size * (1.0 + 1e-9) + 1e-12 * (std::fabs(x1) + std::fabs(y1));
      const int64_t cx0 = cell_of(x1 - s, g.x0, g.inv_cell, g.ncx);
      const int64_t cx1 = cell_of(x2, g.x0, g.inv_cell, g.ncx);
      const int64_t cy0 = cell_of(y1 - s, g.y0, g.inv_cell, g.ncy);
      const int64_t cy1 = cell_of(y2, g.y0, g.inv_cell, g.ncy);
      for (int64_t cy = cy0; cy <= cy1; ++cy) {
        const int64_t base = g.first_cell + cy * g.ncx;
        const int64_t stop = cells[base + cx1 + 1];
        for (int64_t p = cells[base + cx0]; p < stop; ++p) visit(p);
      }
    }
  }

  // IoU of the boxes at positions m and p, 0 when they do not overlap; torchvision's
  // arithmetic, in the boxes' float type.
  T iou(int64_t m, int64_t p) const {
    const T* a = &box[5 * m];
    const T* b = &box[5 * p];
    const T w = std::min(a[2], b[2]) - std::max(a[0], b[0]);
    const T h = std::min(a[3], b[3]) - std::max(a[1], b[1]);
    if (!(w > T(0)) || !(h > T(0))) return T(0);
    const T inter = w * h;
    return inter / (a[4] + b[4] - inter);
  }

  // IoU - rho^2 / c^2 (Zheng et al. 2020), in double, for an overlapping pair.
  double diou(int64_t m, int64_t p, double iou_mp) const {
    const T* a = &box[5 * m];
    const T* b = &box[5 * p];
    const double dx = (double(a[0]) + double(a[2]) - double(b[0]) - double(b[2])) * 0.5;
    const double dy = (double(a[1]) + double(a[3]) - double(b[1]) - double(b[3])) * 0.5;
    const double cw = double(std::max(a[2], b[2])) - double(std::min(a[0], b[0]));
    const double ch = double(std::max(a[3], b[3])) - double(std::min(a[1], b[1]));
    return iou_mp - (dx * dx + dy * dy) / (cw * cw + ch * ch);
  }
};

// Greedy hard suppression, group by group; sets kept[i] = 1 for every kept box.
template <typename T>
void hard_suppress(const T* boxes, int64_t n_all, const int64_t* order, const int64_t* group_start,
                   int64_t n_groups, double iou_threshold, const double* densities, int criterion,
                   uint8_t* kept) {
  Index<T> index(n_all);
  std::vector<uint8_t> removed;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t* members = order + group_start[g];
    const int64_t n = group_start[g + 1] - group_start[g];
    index.build(boxes, members, n);
    removed.assign(n, 0);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t i = members[t];
      const int64_t m = index.pos[i];
      if (removed[m]) continue;
      removed[m] = 1;
      kept[i] = 1;
      const double threshold =
          criterion == kCriterionAdaptive ? std::max(iou_threshold, densities[i]) : iou_threshold;
      index.for_each_candidate(m, [&](int64_t p) {
        if (removed[p]) return;
        const T iou = index.iou(m, p);
        if (!(iou > T(0))) return;
        if (criterion == kCriterionIoU) {
          removed[p] = double(iou) > threshold;
        } else if (criterion == kCriterionAdaptive) {
          removed[p] = double(iou) >= threshold;
        } else {
          removed[p] = index.diou(m, p, double(iou)) > threshold;
        }
      });
    }
  }
}

// Max-heap of (score, id): score descending, then id ascending.
struct Heap {
  std::vector<double> s;
  std::vector<int64_t> id;
  int64_t size = 0;

  static bool before(double s1, int64_t i1, double s2, int64_t i2) {
    return s1 > s2 || (s1 == s2 && i1 < i2);
  }
  void sift_down(int64_t at) {
    const double s0 = s[at];
    const int64_t i0 = id[at];
    for (;;) {
      int64_t child = 2 * at + 1;
      if (child >= size) break;
      if (child + 1 < size && before(s[child + 1], id[child + 1], s[child], id[child])) ++child;
      if (!before(s[child], id[child], s0, i0)) break;
      s[at] = s[child];
      id[at] = id[child];
      at = child;
    }
    s[at] = s0;
    id[at] = i0;
  }
  void pop() {
    --size;
    s[0] = s[size];
    id[0] = id[size];
    sift_down(0);
  }
};

// Greedy suppression by decay (Soft-NMS), group by group. Writes the kept ids and their
// final scores, group by group, each group in descending final score; returns how many.
template <typename T>
int64_t soft_suppress(const T* boxes, const double* scores, int64_t n_all, const int64_t* order,
                      const int64_t* group_start, int64_t n_groups, double iou_threshold,
                      const double* densities, int decay, bool gated, double sigma,
                      double score_threshold, int64_t* keep, double* kept_scores) {
  Index<T> index(n_all);
  std::vector<uint8_t> removed;
  std::vector<double> current(scores, scores + n_all);
  Heap heap{std::vector<double>(n_all), std::vector<int64_t>(n_all)};
  int64_t n_keep = 0;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t* members = order + group_start[g];
    const int64_t n = group_start[g + 1] - group_start[g];
    index.build(boxes, members, n);
    removed.assign(n, 0);
    // members are in descending score: already a valid max-heap
    heap.size = 0;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t i = members[t];
      if (current[i] < score_threshold) {
        removed[index.pos[i]] = 1;
      } else {
        heap.s[heap.size] = current[i];
        heap.id[heap.size++] = i;
      }
    }
    while (heap.size > 0) {
      const double s = heap.s[0];
      const int64_t i = heap.id[0];
      const int64_t m = index.pos[i];
      if (removed[m]) {
        heap.pop();
        continue;
      }
      if (s != current[i]) {  // a stale entry: the box was decayed since; re-key it
        heap.s[0] = current[i];
        heap.sift_down(0);
        continue;
      }
      heap.pop();
      removed[m] = 1;
      keep[n_keep] = i;
      kept_scores[n_keep++] = s;
      const double threshold = densities ? std::max(iou_threshold, densities[i]) : iou_threshold;
      index.for_each_candidate(m, [&](int64_t p) {
        if (removed[p]) return;
        const double iou = double(index.iou(m, p));
        if (!(iou > 0.0)) return;
        double weight;
        if (decay == kDecayLinear) {
          if (iou < threshold) return;
          weight = 1.0 - iou;
        } else {
          if (gated && iou < threshold) return;
          weight = std::exp(-(iou * iou) / sigma);
        }
        const int64_t j = index.id[p];
        current[j] *= weight;
        if (current[j] < score_threshold) removed[p] = 1;
      });
    }
  }
  return n_keep;
}

// ------------------------------------------------------------------------- Python glue

struct Buffer {
  Py_buffer view{};
  bool ok = false;
  // itemsize 0: any item size (checked by the caller)
  Buffer(PyObject* obj, const char* name, Py_ssize_t itemsize, bool writable) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &view, flags) != 0) return;
    ok = true;
    if (itemsize && view.itemsize != itemsize) {
      PyErr_Format(PyExc_TypeError, "%s: expected items of %zd bytes, got %zd", name, itemsize,
                   view.itemsize);
      release();
    }
  }
  ~Buffer() { release(); }
  void release() {
    if (ok) PyBuffer_Release(&view);
    ok = false;
  }
  template <typename U>
  U* data() const { return static_cast<U*>(view.buf); }
  Py_ssize_t size() const { return view.len / view.itemsize; }
};

// 4 for float32 boxes, 8 for float64; 0 (with a TypeError set) otherwise.
int float_size(const Buffer& boxes) {
  const char* f = boxes.view.format ? boxes.view.format : "B";
  while (*f == '<' || *f == '=' || *f == '@') ++f;
  if (*f == 'f' && boxes.view.itemsize == 4) return 4;
  if (*f == 'd' && boxes.view.itemsize == 8) return 8;
  PyErr_SetString(PyExc_TypeError, "boxes: expected float32 or float64");
  return 0;
}

// Runs work() without the GIL; false (with MemoryError set) if it ran out of memory.
template <typename Work>
bool run_without_gil(Work&& work) {
  bool out_of_memory = false;
  Py_BEGIN_ALLOW_THREADS;
  try {
    work();
  } catch (const std::bad_alloc&) {
    out_of_memory = true;
  }
  Py_END_ALLOW_THREADS;
  if (out_of_memory) PyErr_NoMemory();
  return !out_of_memory;
}

// first_invalid(boxes, scores, densities) -> (what, index)
// what: 0 valid, 1 a coordinate is not finite, 2 x2 < x1 or y2 < y1, 3 a score is not
// finite, 4 a density is not finite. scores and densities are float64.
PyObject* py_first_invalid(PyObject*, PyObject* args) {
  PyObject *o_boxes, *o_scores, *o_densities;
  if (!PyArg_ParseTuple(args, "OOO", &o_boxes, &o_scores, &o_densities)) return nullptr;
  Buffer boxes(o_boxes, "boxes", 0, false), scores(o_scores, "scores", 8, false);
  Buffer densities(o_densities, "densities", 8, false);
  if (!boxes.ok || !scores.ok || !densities.ok) return nullptr;
  const int size = float_size(boxes);
  if (!size) return nullptr;
  long what = 0;
  Py_ssize_t where = -1;
  auto scan = [&](const auto* b) {
    const double* s = scores.data<double>();
    for (Py_ssize_t i = 0; i < scores.size() && !what; ++i) {
      for (int c = 0; c < 4; ++c)
        if (!std::isfinite(b[4 * i + c])) what = 1;
      if (!what && (b[4 * i + 2] < b[4 * i] || b[4 * i + 3] < b[4 * i + 1])) what = 2;
      if (!what && !std::isfinite(s[i])) what = 3;
      if (what) where = i;
    }
    const double* d = densities.data<double>();
    for (Py_ssize_t i = 0; i < densities.size() && !what; ++i)
      if (!std::isfinite(d[i])) what = 4, where = i;
  };
  if (size == 4) scan(boxes.data<float>());
  else scan(boxes.data<double>());
  return Py_BuildValue("(ln)", what, where);
}

// group_by_class(order, classes, n_classes, grouped) -> group_start (list of int)
// Stable counting sort of ``order`` (box ids) by class; classes lie in [0, n_classes).
PyObject* py_group_by_class(PyObject*, PyObject* args) {
  PyObject *o_order, *o_classes, *o_grouped;
  Py_ssize_t n_classes;
  if (!PyArg_ParseTuple(args, "OOnO", &o_order, &o_classes, &n_classes, &o_grouped)) return nullptr;
  Buffer order(o_order, "order", 8, false), classes(o_classes, "classes", 8, false);
  Buffer grouped(o_grouped, "grouped", 8, true);
  if (!order.ok || !classes.ok || !grouped.ok) return nullptr;
  const int64_t* o = order.data<int64_t>();
  const int64_t* c = classes.data<int64_t>();
  int64_t* out = grouped.data<int64_t>();
  const Py_ssize_t n = order.size();
  std::vector<int64_t> start(n_classes + 1, 0);
  for (Py_ssize_t i = 0; i < n; ++i) ++start[c[i] + 1];
  for (Py_ssize_t k = 1; k <= n_classes; ++k) start[k] += start[k - 1];
  PyObject* group_start = PyList_New(0);
  if (!group_start) return nullptr;
  for (Py_ssize_t k = 0; k <= n_classes; ++k) {
    if (k == n_classes || start[k + 1] > start[k]) {
      PyObject* v = PyLong_FromLongLong(start[k]);
      if (!v || PyList_Append(group_start, v) != 0) {
        Py_XDECREF(v);
        Py_DECREF(group_start);
        return nullptr;
      }
      Py_DECREF(v);
    }
  }
  for (Py_ssize_t t = 0; t < n; ++t) out[start[c[o[t]]]++] = o[t];
  return group_start;
}

// hard_suppress(boxes, order, group_start, iou_threshold, densities, criterion, kept)
PyObject* py_hard_suppress(PyObject*, PyObject* args) {
  PyObject *o_boxes, *o_order, *o_start, *o_densities, *o_kept;
  double iou_threshold;
  int criterion;
  if (!PyArg_ParseTuple(args, "OOOdOiO", &o_boxes, &o_order, &o_start, &iou_threshold, &o_densities,
                        &criterion, &o_kept))
    return nullptr;
  Buffer boxes(o_boxes, "boxes", 0, false), order(o_order, "order", 8, false);
  Buffer start(o_start, "group_start", 8, false), densities(o_densities, "densities", 8, false);
  Buffer kept(o_kept, "kept", 1, true);
  if (!boxes.ok || !order.ok || !start.ok || !densities.ok || !kept.ok) return nullptr;
  const int size = float_size(boxes);
  if (!size) return nullptr;
  const double* d = densities.size() ? densities.data<double>() : nullptr;
  auto work = [&](const auto* b) {
    hard_suppress(b, order.size(), order.data<int64_t>(), start.data<int64_t>(), start.size() - 1,
                  iou_threshold, d, criterion, kept.data<uint8_t>());
  };
  const bool ok = size == 4 ? run_without_gil([&] { work(boxes.data<float>()); })
                            : run_without_gil([&] { work(boxes.data<double>()); });
  if (!ok) return nullptr;
  Py_RETURN_NONE;
}

// soft_suppress(boxes, scores, order, group_start, iou_threshold, densities, decay, gated,
//               sigma, score_threshold, keep, kept_scores) -> n_keep
PyObject* py_soft_suppress(PyObject*, PyObject* args) {
  PyObject *o_boxes, *o_scores, *o_order, *o_start, *o_densities, *o_keep, *o_kept_scores;
  double iou_threshold, sigma, score_threshold;
  int decay, gated;
  if (!PyArg_ParseTuple(args, "OOOOdOipddOO", &o_boxes, &o_scores, &o_order, &o_start, &iou_threshold,
                        &o_densities, &decay, &gated, &sigma, &score_threshold, &o_keep, &o_kept_scores))
    return nullptr;
  Buffer boxes(o_boxes, "boxes", 0, false), scores(o_scores, "scores", 8, false);
  Buffer order(o_order, "order", 8, false), start(o_start, "group_start", 8, false);
  Buffer densities(o_densities, "densities", 8, false), keep(o_keep, "keep", 8, true);
  Buffer kept_scores(o_kept_scores, "kept_scores", 8, true);
  if (!boxes.ok || !scores.ok || !order.ok || !start.ok || !densities.ok || !keep.ok || !kept_scores.ok)
    return nullptr;
  const int size = float_size(boxes);
  if (!size) return nullptr;
  const double* d = densities.size() ? densities.data<double>() : nullptr;
  int64_t n_keep = 0;
  auto work = [&](const auto* b) {
    n_keep = soft_suppress(b, scores.data<double>(), order.size(), order.data<int64_t>(),
                           start.data<int64_t>(), start.size() - 1, iou_threshold, d, decay, gated != 0,
                           sigma, score_threshold, keep.data<int64_t>(), kept_scores.data<double>());
  };
  const bool ok = size == 4 ? run_without_gil([&] { work(boxes.data<float>()); })
                            : run_without_gil([&] { work(boxes.data<double>()); });
  if (!ok) return nullptr;
  return PyLong_FromLongLong(n_keep);
}

PyMethodDef methods[] = {
    {"first_invalid", py_first_invalid, METH_VARARGS, "Where boxes, scores or densities break the contract."},
    {"group_by_class", py_group_by_class, METH_VARARGS, "Stable counting sort of box ids by class."},
    {"hard_suppress", py_hard_suppress, METH_VARARGS, "Greedy hard suppression (NMS, Adaptive-NMS, DIoU-NMS)."},
    {"soft_suppress", py_soft_suppress, METH_VARARGS, "Greedy suppression by decay (Soft-NMS)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "detkit.ops compiled kernels.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&module);
  if (!m) return nullptr;
  PyModule_AddIntConstant(m, "CRITERION_IOU", kCriterionIoU);
  PyModule_AddIntConstant(m, "CRITERION_ADAPTIVE", kCriterionAdaptive);
  PyModule_AddIntConstant(m, "CRITERION_DIOU", kCriterionDIoU);
  PyModule_AddIntConstant(m, "DECAY_LINEAR", kDecayLinear);
  PyModule_AddIntConstant(m, "DECAY_GAUSSIAN", kDecayGaussian);
  return m;
}
