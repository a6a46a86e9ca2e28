// Reads a lungcds SEG or SR with dcmjs (the DICOM library OHIF parses with) and prints what a
// viewer would take from it, as JSON: node read_dicom.js seg|sr FILE
"use strict";
const fs = require("fs");
const dcmjs = require("dcmjs");

const asList = (value) => (value === undefined ? [] : [].concat(value));

function read(file) {
  const bytes = fs.readFileSync(file);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const message = dcmjs.data.DicomMessage.readFile(buffer);
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);
  ds._meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.meta);
  return ds;
}

// Pixel data as dcmjs hands it over: one buffer per frame when encapsulated (compressed), else one.
function segmentation(ds) {
  return {
    segments: asList(ds.SegmentSequence).map((s) => ({ number: s.SegmentNumber, label: s.SegmentLabel, tracking: s.TrackingID })),
    frames: Number(ds.NumberOfFrames),
    perFrame: asList(ds.PerFrameFunctionalGroupsSequence).length,
    transferSyntax: ds._meta.TransferSyntaxUID,
    pixelParts: asList(ds.PixelData).length,
    pixelBytes: asList(ds.PixelData).reduce((n, part) => n + part.byteLength, 0),
  };
}

// Image coordinates (SCOORD) as a viewer draws them: graphic type, points and the image they are on.
function region(item) {
  const image = asList(asList(item.ContentSequence).find((child) => child.ValueType === "IMAGE")?.ReferencedSOPSequence)[0];
  return {
    graphicType: item.GraphicType,
    points: asList(item.GraphicData).length / 2,
    closed: item.GraphicData[0] === item.GraphicData.at(-2) && item.GraphicData[1] === item.GraphicData.at(-1),
    image: image ? image.ReferencedSOPInstanceUID : null,
  };
}

function report(ds) {
  const numbers = [];
  const regions = [];
  const walk = (items) => {
    for (const item of asList(items)) {
      if (item.ValueType === "SCOORD") {
        regions.push(region(item));
      }
      if (item.ValueType === "NUM") {
        const measured = asList(item.MeasuredValueSequence)[0];
        numbers.push({
          concept: asList(item.ConceptNameCodeSequence)[0].CodeValue,
          value: measured ? Number(measured.NumericValue) : null,
          unit: measured ? asList(measured.MeasurementUnitsCodeSequence)[0].CodeValue : null,
        });
      }
      walk(item.ContentSequence);
    }
  };
  walk(ds.ContentSequence);
  const qualitative = asList(ds.ContentSequence).find(
    (item) => item.ValueType === "CONTAINER" && asList(item.ConceptNameCodeSequence)[0].CodeValue === "C0034375",
  );
  const statements = qualitative ? asList(qualitative.ContentSequence).map(statement) : [];
  return { title: asList(ds.ConceptNameCodeSequence)[0].CodeMeaning, numbers, statements, regions };
}

// A TEXT or CODE item as "concept: value" with the items below it, as a viewer's tree shows it.
function statement(item) {
  const value = item.ValueType === "CODE" ? asList(item.ConceptCodeSequence)[0].CodeMeaning : item.TextValue;
  return {
    text: `${asList(item.ConceptNameCodeSequence)[0].CodeMeaning}: ${value}`,
    relationship: item.RelationshipType,
    children: asList(item.ContentSequence).map(statement),
  };
}

const [kind, file] = process.argv.slice(2);
const ds = read(file);
const common = { sopClass: ds.SOPClassUID, patientId: ds.PatientID, studyUid: ds.StudyInstanceUID };
console.log(JSON.stringify({ ...common, ...(kind === "seg" ? segmentation(ds) : report(ds)) }));
