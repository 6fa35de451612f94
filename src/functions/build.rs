//! `blobgc_bloom_build(fingerprint, num_bits, num_hashes, seed_hex, fpp)`, grouped by shard.
//!
//! Its partial state is the fingerprints themselves (8 bytes each, packed), not a filter: a
//! task reading references holds no filter and sends each fingerprint to its shard's reduce
//! task, which alone allocates that shard's filter. The session lets the partial phase pass
//! rows straight through as states ([`crate::session::tuned`]), so a map task holds one batch,
//! and the shuffle carries O(references) bytes whatever the filter's size.

use super::{check_fingerprint_type, fingerprints, literal, scalar_str, scalar_u64};
use crate::filter::{Bloom, FilterParams, fit};
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, StructArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use std::sync::Arc;

pub const BLOOM_BUILD: &str = "blobgc_bloom_build";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct BloomBuild {
    signature: Signature,
}

impl BloomBuild {
    pub fn new() -> Self {
        BloomBuild {
            signature: Signature::any(5, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for BloomBuild {
    fn name(&self) -> &str {
        BLOOM_BUILD
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_fingerprint_type(&args[0], BLOOM_BUILD)?;
        Ok(DataType::Struct(built_fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "fingerprints"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Groups::of(&args)?)))
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::of(&args)?))
    }
}

/// What the aggregate returns per group: the encoded shard and the ids inserted into it (every
/// non-null fingerprint, repeats included), so that no count travels beside the fingerprints.
pub(super) fn built_fields() -> Fields {
    Fields::from(vec![
        Field::new("filter", DataType::Binary, false),
        Field::new("ids", DataType::UInt64, false),
    ])
}

/// One filter per group (a shard), allocated when the first state is merged into it: the
/// partial phase only gathers fingerprints.
#[derive(Debug)]
struct Groups {
    params: FilterParams,
    fpp: f64,
    filters: Vec<Option<Bloom>>,
    /// Per group, fingerprints gathered and not yet in a filter or a state.
    pending: Vec<Vec<u64>>,
    /// Per group, fingerprints inserted into its filter.
    ids: Vec<u64>,
}

impl Groups {
    fn of(args: &AccumulatorArgs) -> Result<Groups> {
        let [_, bits, hashes, seed, fpp] = args.exprs else {
            return exec_err!(
                "{BLOOM_BUILD} takes (fingerprint, num_bits, num_hashes, seed_hex, fpp)"
            );
        };
        let fpp = match literal(fpp, "fpp")?.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(f)) if f > 0.0 && f < 1.0 => f,
            other => return exec_err!("{BLOOM_BUILD}: fpp must be in (0, 1), got {other}"),
        };
        let seed_hex = scalar_str(&literal(seed, "seed")?, "seed")?;
        let params = FilterParams {
            num_bits: scalar_u64(&literal(bits, "num_bits")?, "num_bits")?,
            num_hashes: u32::try_from(scalar_u64(&literal(hashes, "num_hashes")?, "num_hashes")?)
                .map_err(|_| exec_datafusion_err!("num_hashes out of range"))?,
            seed: u128::from_str_radix(&seed_hex, 16)
                .map_err(|e| exec_datafusion_err!("seed {seed_hex:?}: {e}"))?,
        };
        Bloom::new(params).map_err(|e| exec_datafusion_err!("{e}"))?;
        Ok(Groups {
            params,
            fpp,
            filters: Vec::new(),
            pending: Vec::new(),
            ids: Vec::new(),
        })
    }

    fn resize(&mut self, groups: usize) {
        self.filters.resize_with(groups, || None);
        self.pending.resize_with(groups, Vec::new);
        self.ids.resize(groups, 0);
    }

    /// Inserts every pending fingerprint into its group's filter.
    fn insert_pending(&mut self) -> Result<()> {
        let groups = self.filters.iter_mut().zip(&mut self.pending);
        for ((filter, fps), ids) in groups.zip(&mut self.ids) {
            if fps.is_empty() {
                continue;
            }
            *ids += fps.len() as u64;
            let filter = match filter {
                Some(f) => f,
                None => {
                    filter.insert(Bloom::new(self.params).map_err(|e| exec_datafusion_err!("{e}"))?)
                }
            };
            // Hashed first, inserted after: the inserts fetch their memory ahead.
            fps.iter_mut()
                .for_each(|fp| *fp = filter.hash_fingerprint(*fp));
            filter.insert_hashes(fps);
            fps.clear();
        }
        Ok(())
    }
}

/// Rows `opt_filter` keeps.
fn kept(opt_filter: Option<&BooleanArray>, row: usize) -> bool {
    opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let fps = fingerprints(&values[0])?;
        for (row, &group) in group_indices.iter().enumerate() {
            if fps.is_valid(row) && kept(opt_filter, row) {
                self.pending[group].push(fps.value(row));
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let states = values[0].as_binary::<i32>();
        for (row, &group) in group_indices.iter().enumerate() {
            if states.is_null(row) {
                continue;
            }
            let (fps, rest) = states.value(row).as_chunks::<8>();
            if !rest.is_empty() {
                return exec_err!(
                    "{BLOOM_BUILD}: a partial state of {} bytes is not a list of fingerprints",
                    states.value(row).len()
                );
            }
            self.pending[group].extend(fps.iter().map(|b| u64::from_le_bytes(*b)));
        }
        self.insert_pending()
    }

    /// Each group's filter, folded to `fpp` and encoded, and its id count.
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.insert_pending()?;
        let ids = UInt64Array::from(emit_to.take_needed(&mut self.ids));
        let mut out = BinaryBuilder::new();
        for filter in emit_to.take_needed(&mut self.filters) {
            let filter = match filter {
                Some(f) => f,
                None => Bloom::new(self.params).map_err(|e| exec_datafusion_err!("{e}"))?,
            };
            let fitted = fit(filter, self.fpp).map_err(|e| exec_datafusion_err!("{e}"))?;
            out.append_value(fitted.encode());
        }
        emit_to.take_needed(&mut self.pending);
        let columns: Vec<ArrayRef> = vec![Arc::new(out.finish()), Arc::new(ids)];
        Ok(Arc::new(StructArray::try_new(
            built_fields(),
            columns,
            None,
        )?))
    }

    /// Each group's gathered fingerprints, packed.
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        if self.filters.iter().any(Option::is_some) {
            return exec_err!("{BLOOM_BUILD}: a merged filter cannot become a partial state");
        }
        emit_to.take_needed(&mut self.filters);
        emit_to.take_needed(&mut self.ids);
        let pending = emit_to.take_needed(&mut self.pending);
        let packed: BinaryArray = pending
            .iter()
            .map(|fps| {
                Some(
                    fps.iter()
                        .flat_map(|fp| fp.to_le_bytes())
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        Ok(vec![Arc::new(packed)])
    }

    /// Every row as the state of its own: its fingerprint, or nothing for a null id.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let fps = fingerprints(&values[0])?;
        let mut out = BinaryBuilder::with_capacity(fps.len(), fps.len() * 8);
        for row in 0..fps.len() {
            match fps.is_valid(row) && kept(opt_filter, row) {
                true => out.append_value(fps.value(row).to_le_bytes()),
                false => out.append_value([]),
            }
        }
        Ok(vec![Arc::new(out.finish())])
    }

    fn size(&self) -> usize {
        let filters = self.filters.iter().flatten().count() as u64 * self.params.size_bytes();
        let ids = self.ids.capacity() * 8;
        let pending: usize = self.pending.iter().map(|p| p.capacity() * 8).sum();
        std::mem::size_of_val(self) + filters as usize + pending + ids
    }
}

/// The aggregate without groups: one group of [`Groups`].
#[derive(Debug)]
struct OneGroup(Groups);

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0
            .update_batch(values, &vec![0; values[0].len()], None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.merge_batch(states, &vec![0; states[0].len()], 1)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.resize(1);
        let states = self.0.state(EmitTo::All)?;
        Ok(vec![ScalarValue::try_from_array(&states[0], 0)?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.resize(1);
        ScalarValue::try_from_array(&self.0.evaluate(EmitTo::All)?, 0)
    }

    fn size(&self) -> usize {
        GroupsAccumulator::size(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::fingerprint;
    use arrow::datatypes::UInt64Type;

    fn groups() -> Groups {
        Groups {
            params: FilterParams::foldable(4_000, 0.01, 9),
            fpp: 0.01,
            filters: Vec::new(),
            pending: Vec::new(),
            ids: Vec::new(),
        }
    }

    #[test]
    fn states_gathered_or_passed_through_build_the_same_shards() {
        let fps: ArrayRef = Arc::new(UInt64Array::from_iter(
            (0..3_000).map(|i| (i % 7 != 0).then(|| fingerprint(&format!("1_3_{i}")))),
        ));
        let rows: Vec<usize> = (0..3_000).map(|i| i % 2).collect();

        let mut partial = groups();
        partial
            .update_batch(&[Arc::clone(&fps)], &rows, None, 2)
            .unwrap();
        let mut gathered = groups();
        gathered
            .merge_batch(&partial.state(EmitTo::All).unwrap(), &[0, 1], 2)
            .unwrap();

        let mut passed = groups();
        let states = passed.convert_to_state(&[fps], None).unwrap();
        passed.merge_batch(&states, &rows, 2).unwrap();

        let a = gathered.evaluate(EmitTo::All).unwrap();
        let b = passed.evaluate(EmitTo::All).unwrap();
        assert_eq!(a.as_struct(), b.as_struct());
        let ids = a.as_struct().column(1).as_primitive::<UInt64Type>();
        assert_eq!(ids.values().iter().sum::<u64>(), 3_000 - 429);
        let shard = Bloom::decode(a.as_struct().column(0).as_binary::<i32>().value(1)).unwrap();
        assert!(
            (0..3_000)
                .filter(|i| i % 2 == 1 && i % 7 != 0)
                .all(|i| shard.contains(&format!("1_3_{i}")))
        );
    }

    #[test]
    fn a_state_that_is_not_fingerprints_is_refused() {
        let bad: ArrayRef = Arc::new(BinaryArray::from_iter_values([[1u8; 9]]));
        let refused = groups().merge_batch(&[bad], &[0], 1).unwrap_err();
        assert!(refused.to_string().contains("9 bytes"), "{refused}");
    }
}
